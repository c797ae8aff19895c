//! Access tokens this server issues: RS256 JWTs signed with the [`SigningKey`], and their
//! validation with the algorithm, key, issuer and audience pinned.
//!
//! A token carries what the layers below need without a lookup (client, user, fhirUser,
//! patient and encounter context, scope); what can change after issue (revocation) is checked
//! by the caller against the store, by the token's `jti` and the refresh family it came from.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use crate::AuthError;
use crate::keys::SigningKey;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The user (`username`) or, for a backend client, the client id.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// The refresh-token family this token was derived from: revoking the family revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// Issues and validates this server's access tokens.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    key: Arc<SigningKey>,
    /// `{public_url}/auth`.
    pub issuer: String,
    /// The FHIR base, the only audience.
    pub audience: String,
}

impl TokenIssuer {
    pub fn new(key: Arc<SigningKey>, issuer: String, audience: String) -> Self {
        TokenIssuer { key, issuer, audience }
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    pub fn issue(&self, claims: &AccessClaims) -> Result<String, AuthError> {
        let value = serde_json::to_value(claims).map_err(|_| AuthError::BadKey("claims do not serialise".into()))?;
        self.key.sign(&value)
    }

    /// Checks signature (RS256 with this server's key only), `iss`, `aud`, `exp`, `nbf`, `iat`.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Oversized);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if header.kid.as_deref() != Some(self.key.kid()) {
            return Err(AuthError::UnknownKey);
        }
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS as u64;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, self.key.decoding_key(), &v).map_err(map_jwt_error)?;
        let claims = data.claims;
        if claims.iat > now + LEEWAY_SECS {
            return Err(AuthError::IssuedInFuture);
        }
        // jsonwebtoken checks exp against its own clock; `now` is the caller's, for tests.
        if claims.exp + LEEWAY_SECS < now {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// jsonwebtoken's error -> the check that failed.
pub(crate) fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSubject => AuthError::SubjectMismatch,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            _ => "nbf",
        }),
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(Arc::new(SigningKey::generate().unwrap()), "http://h/auth".into(), "http://h/fhir".into())
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn claims(i: &TokenIssuer) -> AccessClaims {
        AccessClaims {
            iss: i.issuer.clone(),
            sub: "dr".into(),
            aud: i.audience.clone(),
            exp: now() + 300,
            iat: now(),
            jti: "j1".into(),
            client_id: "app".into(),
            scope: "patient/*.rs".into(),
            patient: Some("p1".into()),
            encounter: None,
            fhir_user: Some("Practitioner/dr".into()),
            family: None,
        }
    }

    #[test]
    fn issued_tokens_verify() {
        let i = issuer();
        let t = i.issue(&claims(&i)).unwrap();
        assert_eq!(i.verify(&t, now()).unwrap(), claims(&i));
    }

    #[test]
    fn rejects_expired_token() {
        let i = issuer();
        let mut c = claims(&i);
        c.exp = now() - 3600;
        c.iat = now() - 7200;
        assert_eq!(i.verify(&i.issue(&c).unwrap(), now()), Err(AuthError::Expired));
    }

    #[test]
    fn rejects_token_from_the_future() {
        let i = issuer();
        let mut c = claims(&i);
        c.iat = now() + 3600;
        c.exp = now() + 7200;
        assert_eq!(i.verify(&i.issue(&c).unwrap(), now()), Err(AuthError::IssuedInFuture));
    }

    #[test]
    fn rejects_wrong_audience_and_issuer() {
        let i = issuer();
        let mut c = claims(&i);
        c.aud = "http://other/fhir".into();
        assert_eq!(i.verify(&i.issue(&c).unwrap(), now()), Err(AuthError::WrongAudience));
        let mut c = claims(&i);
        c.iss = "http://evil/auth".into();
        assert_eq!(i.verify(&i.issue(&c).unwrap(), now()), Err(AuthError::WrongIssuer));
    }

    #[test]
    fn rejects_token_of_another_key() {
        let (a, b) = (issuer(), issuer());
        let t = b.issue(&claims(&a)).unwrap();
        assert_eq!(a.verify(&t, now()), Err(AuthError::UnknownKey));
    }

    #[test]
    fn rejects_alg_none() {
        let i = issuer();
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, i.key().kid()));
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims(&i)).unwrap());
        assert!(i.verify(&format!("{header}.{body}."), now()).is_err());
    }

    #[test]
    fn rejects_hs256_signed_with_the_public_key() {
        let i = issuer();
        let header =
            jsonwebtoken::Header { alg: Algorithm::HS256, kid: Some(i.key().kid().into()), ..Default::default() };
        let public = i.key().jwks()["keys"][0]["n"].as_str().unwrap().to_string();
        let forged =
            jsonwebtoken::encode(&header, &claims(&i), &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()))
                .unwrap();
        assert_eq!(i.verify(&forged, now()), Err(AuthError::AlgorithmNotAllowed));
    }

    #[test]
    fn rejects_tampered_claims() {
        let i = issuer();
        let t = i.issue(&claims(&i)).unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c = claims(&i);
        c.scope = "system/*.cruds".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_string(&c).unwrap());
        assert_eq!(i.verify(&parts.join("."), now()), Err(AuthError::BadSignature));
    }

    #[test]
    fn rejects_garbage_and_oversized_tokens() {
        let i = issuer();
        for bad in ["", "abc", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30"] {
            assert!(i.verify(bad, now()).is_err(), "{bad:?}");
        }
        assert_eq!(i.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), now()), Err(AuthError::Oversized));
    }
}
