//! PKCE (RFC 7636) as SMART requires it: `S256` only, `plain` refused.
//!
//! Two checks: at the authorization endpoint, that the challenge is a well-formed S256
//! challenge; at the token endpoint, that the verifier is well-formed and hashes to it. The
//! comparison is constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AuthError;

/// Why a PKCE parameter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge is missing")]
    MissingChallenge,
    #[error("code_challenge_method must be S256")]
    MethodNotS256,
    #[error("code_challenge is not a base64url SHA-256 digest")]
    MalformedChallenge,
    #[error("code_verifier is missing")]
    MissingVerifier,
    #[error("code_verifier must be 43 to 128 unreserved characters")]
    MalformedVerifier,
    #[error("code_verifier does not match the challenge")]
    Mismatch,
}

impl From<PkceError> for AuthError {
    fn from(e: PkceError) -> AuthError {
        match e {
            PkceError::MissingChallenge => AuthError::InvalidRequest("code_challenge is missing"),
            PkceError::MethodNotS256 => AuthError::InvalidRequest("code_challenge_method must be S256"),
            PkceError::MalformedChallenge => AuthError::InvalidRequest("code_challenge is malformed"),
            PkceError::MissingVerifier => AuthError::InvalidGrant("code_verifier is missing"),
            PkceError::MalformedVerifier => AuthError::InvalidGrant("code_verifier is malformed"),
            PkceError::Mismatch => AuthError::InvalidGrant("code_verifier does not match"),
        }
    }
}

/// The authorization request's challenge: present, `S256` (an absent method means `plain`
/// in RFC 7636, so it is refused too), and 43 base64url characters.
pub fn check_challenge(challenge: Option<&str>, method: Option<&str>) -> Result<(), PkceError> {
    let challenge = challenge.filter(|c| !c.is_empty()).ok_or(PkceError::MissingChallenge)?;
    if method != Some("S256") {
        return Err(PkceError::MethodNotS256);
    }
    let decoded = URL_SAFE_NO_PAD.decode(challenge).map_err(|_| PkceError::MalformedChallenge)?;
    if challenge.len() != 43 || decoded.len() != 32 {
        return Err(PkceError::MalformedChallenge);
    }
    Ok(())
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// The token request's verifier against the stored challenge.
pub fn verify(verifier: Option<&str>, challenge: &str) -> Result<(), PkceError> {
    let verifier = verifier.ok_or(PkceError::MissingVerifier)?;
    if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(is_unreserved) {
        return Err(PkceError::MalformedVerifier);
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) { Ok(()) } else { Err(PkceError::Mismatch) }
}

/// The S256 challenge of a verifier (for clients and tests).
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn accepts_the_rfc_example() {
        assert_eq!(challenge_of(VERIFIER), CHALLENGE);
        assert_eq!(check_challenge(Some(CHALLENGE), Some("S256")), Ok(()));
        assert_eq!(verify(Some(VERIFIER), CHALLENGE), Ok(()));
    }

    #[test]
    fn rejects_plain_method() {
        assert_eq!(check_challenge(Some(CHALLENGE), Some("plain")), Err(PkceError::MethodNotS256));
    }

    #[test]
    fn rejects_absent_method_which_means_plain() {
        assert_eq!(check_challenge(Some(CHALLENGE), None), Err(PkceError::MethodNotS256));
    }

    #[test]
    fn rejects_missing_or_blank_challenge() {
        assert_eq!(check_challenge(None, Some("S256")), Err(PkceError::MissingChallenge));
        assert_eq!(check_challenge(Some(""), Some("S256")), Err(PkceError::MissingChallenge));
    }

    #[test]
    fn rejects_malformed_challenge() {
        assert_eq!(check_challenge(Some("short"), Some("S256")), Err(PkceError::MalformedChallenge));
        assert_eq!(check_challenge(Some(&"*".repeat(43)), Some("S256")), Err(PkceError::MalformedChallenge));
    }

    #[test]
    fn rejects_missing_verifier() {
        assert_eq!(verify(None, CHALLENGE), Err(PkceError::MissingVerifier));
    }

    #[test]
    fn rejects_blank_verifier() {
        assert_eq!(verify(Some(""), CHALLENGE), Err(PkceError::MalformedVerifier));
    }

    #[test]
    fn rejects_wrong_verifier() {
        assert_eq!(verify(Some(&"a".repeat(43)), CHALLENGE), Err(PkceError::Mismatch));
    }

    #[test]
    fn rejects_verifier_equal_to_challenge_as_plain_would_send() {
        assert_eq!(verify(Some(CHALLENGE), CHALLENGE), Err(PkceError::Mismatch));
    }

    #[test]
    fn rejects_verifier_with_reserved_characters_or_wrong_length() {
        assert_eq!(verify(Some(&format!("{}+", "a".repeat(43))), CHALLENGE), Err(PkceError::MalformedVerifier));
        assert_eq!(verify(Some(&"a".repeat(129)), CHALLENGE), Err(PkceError::MalformedVerifier));
    }
}
