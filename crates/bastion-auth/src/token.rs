//! Tokens this server issues, all RS256 JWTs signed with the [`SigningKey`]: access tokens,
//! refresh tokens and OpenID Connect id tokens, and the validation of the first two with the
//! algorithm, key, `typ`, issuer and audience pinned.
//!
//! The three kinds cannot stand in for each other: each has its own `typ` header
//! (`at+jwt`, `refresh+jwt`, `JWT`) and its own audience (the FHIR base, the token endpoint,
//! the client id), and verification checks both.
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
    /// The purpose of use granted (v3-ActReason); absent on tokens of external issuers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<String>,
    /// The grant this token was derived from (an authorization code and every refresh
    /// after it): revoking the family revokes it. Present on every token issued to a user;
    /// absent on backend (`client_credentials`) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Roles an external issuer's token names (see `external::ClaimMapping::roles`); never
    /// written into this server's own tokens, whose roles come from the configuration.
    #[serde(default, skip_serializing)]
    pub roles: Option<Vec<String>>,
    /// The organization an external issuer's token names; never in this server's own tokens.
    #[serde(default, skip_serializing)]
    pub organization: Option<String>,
    /// The clearance an external issuer's token names (as written; `Some("")` when the
    /// configured claim is missing); never in this server's own tokens.
    #[serde(default, skip_serializing)]
    pub clearance: Option<String>,
}

/// A refresh token: everything needed to mint the next access token without a lookup. What
/// can change (revocation, rotation) is the store's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub iss: String,
    pub sub: String,
    /// The token endpoint: a refresh token is presented nowhere else.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    /// The scopes granted at authorization; a refresh may ask for these or fewer.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<String>,
    pub family: String,
}

const ACCESS_TYP: &str = "at+jwt";
const REFRESH_TYP: &str = "refresh+jwt";

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
        self.key.sign_typed(&to_value(claims)?, ACCESS_TYP)
    }

    /// Checks an access token: signature (RS256 with this server's key only), `typ`, `iss`,
    /// `aud` (the FHIR base), `exp`, `nbf`, `iat`.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, AuthError> {
        let claims: AccessClaims = self.verify_typed(token, ACCESS_TYP, &self.audience)?;
        check_times(claims.iat, claims.exp, now)?;
        Ok(claims)
    }

    pub fn issue_refresh(&self, claims: &RefreshClaims) -> Result<String, AuthError> {
        self.key.sign_typed(&to_value(claims)?, REFRESH_TYP)
    }

    /// Checks a refresh token as [`TokenIssuer::verify`] does an access token, with the token
    /// endpoint as the audience.
    pub fn verify_refresh(&self, token: &str, token_endpoint: &str, now: i64) -> Result<RefreshClaims, AuthError> {
        let claims: RefreshClaims = self.verify_typed(token, REFRESH_TYP, token_endpoint)?;
        check_times(claims.iat, claims.exp, now)?;
        Ok(claims)
    }

    /// An OpenID Connect id token; its audience is the client, so it is never accepted here.
    pub fn issue_id_token(&self, claims: &serde_json::Value) -> Result<String, AuthError> {
        self.key.sign_typed(claims, "JWT")
    }

    fn verify_typed<T: serde::de::DeserializeOwned>(&self, token: &str, typ: &str, aud: &str) -> Result<T, AuthError> {
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
        if header.typ.as_deref() != Some(typ) {
            return Err(AuthError::WrongTokenType);
        }
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS as u64;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[aud]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(jsonwebtoken::decode::<T>(token, self.key.decoding_key(), &v).map_err(map_jwt_error)?.claims)
    }
}

fn to_value<T: Serialize>(claims: &T) -> Result<serde_json::Value, AuthError> {
    serde_json::to_value(claims).map_err(|_| AuthError::BadKey("claims do not serialise".into()))
}

/// `iat` and `exp` against the caller's clock (jsonwebtoken checks `exp` against its own;
/// `now` is the caller's, so tests can move it).
fn check_times(iat: i64, exp: i64, now: i64) -> Result<(), AuthError> {
    if iat > now + LEEWAY_SECS {
        return Err(AuthError::IssuedInFuture);
    }
    if exp + LEEWAY_SECS < now {
        return Err(AuthError::Expired);
    }
    Ok(())
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
            purpose_of_use: None,
            family: None,
            roles: None,
            organization: None,
            clearance: None,
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

    fn refresh_claims(i: &TokenIssuer) -> RefreshClaims {
        RefreshClaims {
            iss: i.issuer.clone(),
            sub: "dr".into(),
            aud: "http://h/auth/token".into(),
            exp: now() + 300,
            iat: now(),
            jti: "r1".into(),
            client_id: "app".into(),
            scope: "patient/*.rs offline_access".into(),
            patient: Some("p1".into()),
            encounter: None,
            fhir_user: None,
            purpose_of_use: None,
            family: "f1".into(),
        }
    }

    #[test]
    fn refresh_tokens_verify_at_the_token_endpoint_only() {
        let i = issuer();
        let r = i.issue_refresh(&refresh_claims(&i)).unwrap();
        assert_eq!(i.verify_refresh(&r, "http://h/auth/token", now()).unwrap(), refresh_claims(&i));
        assert_eq!(i.verify(&r, now()), Err(AuthError::WrongTokenType), "a refresh token is no access token");
    }

    #[test]
    fn rejects_access_token_presented_as_refresh_token() {
        let i = issuer();
        let mut c = claims(&i);
        c.aud = "http://h/auth/token".into();
        let t = i.issue(&c).unwrap();
        assert_eq!(i.verify_refresh(&t, "http://h/auth/token", now()), Err(AuthError::WrongTokenType));
    }

    #[test]
    fn rejects_id_token_presented_as_access_token() {
        let i = issuer();
        let id = i.issue_id_token(&serde_json::to_value(claims(&i)).unwrap()).unwrap();
        assert_eq!(i.verify(&id, now()), Err(AuthError::WrongTokenType));
    }

    #[test]
    fn rejects_expired_refresh_token() {
        let i = issuer();
        let mut c = refresh_claims(&i);
        c.exp = now() - 3600;
        c.iat = now() - 7200;
        let r = i.issue_refresh(&c).unwrap();
        assert_eq!(i.verify_refresh(&r, "http://h/auth/token", now()), Err(AuthError::Expired));
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
