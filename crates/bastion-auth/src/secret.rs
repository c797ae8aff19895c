//! Passwords (Argon2id PHC strings, what `bastion hash-password` prints) and client secrets.
//!
//! A user's password is verified against its PHC string with the parameters the string
//! carries. A client secret is compared in constant time on its SHA-256, so neither its
//! length nor a common prefix shows in the timing.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AuthError;

/// OWASP's Argon2id parameters: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).expect("valid parameters"))
}

/// A new PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::KeyStore(format!("no randomness: {e}")))?;
    let hash: PasswordHash =
        argon2().hash_password_with_salt(password.as_bytes(), &salt).map_err(|e| AuthError::KeyStore(e.to_string()))?;
    Ok(hash.to_string())
}

/// Does `password` match the PHC string? A malformed PHC string matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Constant-time comparison of a presented client secret with the configured one.
pub fn secret_matches(presented: &str, configured: &str) -> bool {
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(configured.as_bytes()));
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horse ", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn malformed_phc_matches_nothing() {
        assert!(!verify_password("x", "not a phc"));
        assert!(!verify_password("", ""));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches("s3cret", "s3cret"));
        assert!(!secret_matches("s3cre", "s3cret"));
        assert!(!secret_matches("", "s3cret"));
    }
}
