//! Client authentication with a signed assertion (`private_key_jwt`, RFC 7523, as SMART
//! Backend Services profiles it).
//!
//! Checks, each with its own [`AuthError`]: the algorithm is RS384 or ES384 and matches the key
//! it names; the `kid` names a key of the client; no `jwk` or `x5u`, and a `jku` only when it
//! is the client's registered JWKS URL (keys come from the registration, never from the token); `iss` = `sub` = the client id; `aud` = the token endpoint; `exp`
//! present, not past and at most five minutes ahead; a `jti`. Whether the `jti` was seen before
//! is the caller's question to the store ([`VerifiedAssertion::jti`]), so that the replay
//! record survives restarts and is shared by every node on one database.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::AuthError;
use crate::token::{LEEWAY_SECS, MAX_TOKEN_BYTES, map_jwt_error};

/// `client_assertion_type` for a JWT assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far ahead an assertion's `exp` may be.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// A set of public keys (a client's, or an external issuer's), each with the one algorithm it
/// may be used with: the algorithm is decided when the key is read, never taken from a token.
#[derive(Clone)]
pub struct PublicKeys {
    keys: Vec<PublicKey>,
}

/// Which algorithms the keys of a set are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProfile {
    /// SMART client assertions: RSA keys are RS384, P-384 keys ES384.
    ClientAssertion,
    /// Access tokens of an external identity provider: the JWK's `alg` when given (RS256,
    /// RS384, RS512, PS256, ES256, ES384), otherwise RS256 for RSA, ES256 for P-256 and
    /// ES384 for P-384 keys.
    IssuerTokens,
}

#[derive(Clone)]
struct PublicKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| (&k.kid, k.alg))).finish()
    }
}

impl PublicKeys {
    /// Reads a JWKS document. RSA keys are RS384 keys, P-384 keys ES384 keys (unless the JWK's
    /// own `alg` says otherwise, which must then be one of those two); other keys are ignored.
    pub fn from_jwks(json: &str) -> Result<PublicKeys, AuthError> {
        Self::from_jwks_for(json, KeyProfile::ClientAssertion)
    }

    /// Reads a JWKS document for the given use (see [`KeyProfile`]); unusable keys are ignored.
    pub fn from_jwks_for(json: &str, profile: KeyProfile) -> Result<PublicKeys, AuthError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| AuthError::BadKey(format!("JWKS: {e}")))?;
        let keys: Vec<PublicKey> = set.keys.iter().filter_map(|k| public_key(k, profile)).collect();
        if keys.is_empty() {
            return Err(AuthError::BadKey("the JWKS has no RSA or P-384 public key".into()));
        }
        Ok(PublicKeys { keys })
    }

    /// Does the set hold a key with this `kid`?
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key a JWS header names (by `kid`, or the only key when there is no `kid`), if its
    /// algorithm is the header's.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<(&DecodingKey, Algorithm), AuthError> {
        self.find_key(kid, alg).map(|k| (&k.key, k.alg))
    }

    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<&PublicKey, AuthError> {
        let by_kid: Vec<&PublicKey> = match kid {
            Some(k) => self.keys.iter().filter(|c| c.kid.as_deref() == Some(k)).collect(),
            // Without a kid, only an unambiguous key set will do.
            None if self.keys.len() == 1 => self.keys.iter().collect(),
            None => Vec::new(),
        };
        let key = by_kid.first().ok_or(AuthError::UnknownKey)?;
        if key.alg != alg {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        Ok(key)
    }
}

fn public_key(jwk: &Jwk, profile: KeyProfile) -> Option<PublicKey> {
    let curve = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => None,
        AlgorithmParameters::EllipticCurve(ec) => Some(ec.curve.clone()),
        _ => return None,
    };
    let named = jwk.common.key_algorithm.map(|a| a.to_string());
    let alg = match (profile, &curve, named.as_deref()) {
        (KeyProfile::ClientAssertion, None, None | Some("RS384")) => Algorithm::RS384,
        (KeyProfile::ClientAssertion, Some(EllipticCurve::P384), None | Some("ES384")) => Algorithm::ES384,
        (KeyProfile::ClientAssertion, _, _) => return None,
        (KeyProfile::IssuerTokens, None, None | Some("RS256")) => Algorithm::RS256,
        (KeyProfile::IssuerTokens, None, Some("RS384")) => Algorithm::RS384,
        (KeyProfile::IssuerTokens, None, Some("RS512")) => Algorithm::RS512,
        (KeyProfile::IssuerTokens, None, Some("PS256")) => Algorithm::PS256,
        (KeyProfile::IssuerTokens, Some(EllipticCurve::P256), None | Some("ES256")) => Algorithm::ES256,
        (KeyProfile::IssuerTokens, Some(EllipticCurve::P384), None | Some("ES384")) => Algorithm::ES384,
        (KeyProfile::IssuerTokens, _, _) => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(PublicKey { kid: jwk.common.key_id.clone(), alg, key })
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
}

/// What the caller still has to check: that `jti` is new (until `exp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub jti: String,
    pub exp: i64,
}

/// Verifies `assertion` for `client_id` against its registered keys. `registered_jku` is the
/// client's registered JWKS URL, the only `jku` an assertion may name.
pub fn verify_client_assertion(
    assertion: &str,
    client_id: &str,
    keys: &PublicKeys,
    registered_jku: Option<&str>,
    token_endpoint: &str,
    now: i64,
) -> Result<VerifiedAssertion, AuthError> {
    if assertion.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Oversized);
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed,
        _ => AuthError::Malformed,
    })?;
    if header.jwk.is_some() || header.x5u.is_some() {
        return Err(AuthError::JkuNotAllowed);
    }
    if let Some(jku) = &header.jku
        && registered_jku != Some(jku.as_str())
    {
        return Err(AuthError::JkuNotAllowed);
    }
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    let (key, alg) = keys.find(header.kid.as_deref(), header.alg)?;
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS as u64;
    v.validate_nbf = true;
    v.set_issuer(&[client_id]);
    v.sub = Some(client_id.to_string());
    v.set_audience(&[token_endpoint]);
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<AssertionClaims>(assertion, key, &v).map_err(|e| match map_jwt_error(e) {
        AuthError::WrongIssuer => AuthError::SubjectMismatch,
        other => other,
    })?;
    let claims = data.claims;
    if claims.exp > now + MAX_ASSERTION_LIFETIME_SECS + LEEWAY_SECS {
        return Err(AuthError::ExpiresTooLate);
    }
    if claims.exp + LEEWAY_SECS < now {
        return Err(AuthError::Expired);
    }
    let jti = claims.jti.filter(|j| !j.is_empty() && j.len() <= 256).ok_or(AuthError::MissingClaim("jti"))?;
    Ok(VerifiedAssertion { jti, exp: claims.exp })
}

/// Test keys and a minimal JWS signer for assertions (RS384 and ES384), shared with the
/// server's tests through `testkit`.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA384};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    /// A client's private key and the JWKS it registers.
    pub enum TestKey {
        Rsa(RsaKeyPair, String),
        Ec(EcdsaKeyPair, String),
    }

    impl TestKey {
        pub fn rsa(kid: &str) -> TestKey {
            TestKey::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap(), kid.into())
        }

        pub fn ec(kid: &str) -> TestKey {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new()).unwrap();
            TestKey::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap(), kid.into())
        }

        pub fn alg(&self) -> &'static str {
            match self {
                TestKey::Rsa(..) => "RS384",
                TestKey::Ec(..) => "ES384",
            }
        }

        pub fn kid(&self) -> &str {
            match self {
                TestKey::Rsa(_, k) | TestKey::Ec(_, k) => k,
            }
        }

        /// The public JWK.
        pub fn jwk(&self) -> Value {
            let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            match self {
                TestKey::Rsa(k, kid) => {
                    let p = k.public_key();
                    json!({"kty": "RSA", "kid": kid, "alg": "RS384",
                        "n": b64(p.modulus().big_endian_without_leading_zero()),
                        "e": b64(p.exponent().big_endian_without_leading_zero())})
                }
                TestKey::Ec(k, kid) => {
                    let point = k.public_key().as_ref();
                    json!({"kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384",
                        "x": b64(&point[1..49]), "y": b64(&point[49..97])})
                }
            }
        }

        pub fn jwks(&self) -> String {
            json!({"keys": [self.jwk()]}).to_string()
        }

        /// PKCS#8 DER of the private key (to hand to a test client written in another language).
        pub fn pkcs8(&self) -> Vec<u8> {
            match self {
                TestKey::Rsa(k, _) => k.as_der().unwrap().as_ref().to_vec(),
                TestKey::Ec(..) => Vec::new(),
            }
        }

        /// A compact JWS with this header and these claims.
        pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let rng = SystemRandom::new();
            let sig = match self {
                TestKey::Rsa(k, _) => {
                    let mut sig = vec![0u8; k.public_modulus_len()];
                    k.sign(&RSA_PKCS1_SHA384, &rng, input.as_bytes(), &mut sig).unwrap();
                    sig
                }
                TestKey::Ec(k, _) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            };
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }

        pub fn sign(&self, claims: &Value) -> String {
            self.sign_with_header(&json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid()}), claims)
        }
    }

    /// The claims of a valid assertion for `client_id` at `token_endpoint`.
    pub fn assertion_claims(client_id: &str, token_endpoint: &str, now: i64, jti: &str) -> Value {
        json!({"iss": client_id, "sub": client_id, "aud": token_endpoint, "exp": now + 240, "iat": now, "jti": jti})
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use serde_json::json;

    const TOKEN_URL: &str = "http://h/auth/token";

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn check(key: &TestKey, claims: &serde_json::Value) -> Result<VerifiedAssertion, AuthError> {
        let keys = PublicKeys::from_jwks(&key.jwks()).unwrap();
        verify_client_assertion(&key.sign(claims), "bulk", &keys, None, TOKEN_URL, now())
    }

    #[test]
    fn accepts_rs384_and_es384_assertions() {
        for key in [TestKey::rsa("r1"), TestKey::ec("e1")] {
            let v = check(&key, &assertion_claims("bulk", TOKEN_URL, now(), "j-1")).unwrap();
            assert_eq!(v.jti, "j-1");
        }
    }

    #[test]
    fn rejects_wrong_aud() {
        let key = TestKey::rsa("r1");
        let c = assertion_claims("bulk", "http://h/fhir", now(), "j");
        assert_eq!(check(&key, &c), Err(AuthError::WrongAudience));
    }

    #[test]
    fn rejects_iss_not_sub() {
        let key = TestKey::rsa("r1");
        let mut c = assertion_claims("bulk", TOKEN_URL, now(), "j");
        c["sub"] = json!("other");
        assert_eq!(check(&key, &c), Err(AuthError::SubjectMismatch));
        let mut c = assertion_claims("bulk", TOKEN_URL, now(), "j");
        c["iss"] = json!("other");
        assert_eq!(check(&key, &c), Err(AuthError::SubjectMismatch));
    }

    #[test]
    fn rejects_exp_too_far_ahead() {
        let key = TestKey::ec("e1");
        let mut c = assertion_claims("bulk", TOKEN_URL, now(), "j");
        c["exp"] = json!(now() + 3600);
        assert_eq!(check(&key, &c), Err(AuthError::ExpiresTooLate));
    }

    #[test]
    fn rejects_expired_assertion() {
        let key = TestKey::ec("e1");
        let mut c = assertion_claims("bulk", TOKEN_URL, now(), "j");
        c["exp"] = json!(now() - 600);
        assert_eq!(check(&key, &c), Err(AuthError::Expired));
    }

    #[test]
    fn rejects_missing_jti() {
        let key = TestKey::rsa("r1");
        let mut c = assertion_claims("bulk", TOKEN_URL, now(), "j");
        c.as_object_mut().unwrap().remove("jti");
        assert_eq!(check(&key, &c), Err(AuthError::MissingClaim("jti")));
    }

    #[test]
    fn rejects_unknown_kid() {
        let key = TestKey::rsa("r1");
        let keys = PublicKeys::from_jwks(&key.jwks()).unwrap();
        let a = key.sign_with_header(
            &json!({"alg": "RS384", "kid": "nope"}),
            &assertion_claims("bulk", TOKEN_URL, now(), "j"),
        );
        assert_eq!(verify_client_assertion(&a, "bulk", &keys, None, TOKEN_URL, now()), Err(AuthError::UnknownKey));
    }

    #[test]
    fn rejects_key_of_another_client() {
        let (mine, theirs) = (TestKey::rsa("r1"), TestKey::rsa("r1"));
        let keys = PublicKeys::from_jwks(&mine.jwks()).unwrap();
        let a = theirs.sign(&assertion_claims("bulk", TOKEN_URL, now(), "j"));
        assert_eq!(verify_client_assertion(&a, "bulk", &keys, None, TOKEN_URL, now()), Err(AuthError::BadSignature));
    }

    #[test]
    fn rejects_algorithm_other_than_the_keys() {
        let key = TestKey::rsa("r1");
        let keys = PublicKeys::from_jwks(&key.jwks()).unwrap();
        for alg in ["RS256", "ES384", "HS384", "none", "PS384"] {
            let a = key
                .sign_with_header(&json!({"alg": alg, "kid": "r1"}), &assertion_claims("bulk", TOKEN_URL, now(), "j"));
            assert!(
                matches!(
                    verify_client_assertion(&a, "bulk", &keys, None, TOKEN_URL, now()),
                    Err(AuthError::AlgorithmNotAllowed | AuthError::Malformed)
                ),
                "{alg}"
            );
        }
    }

    #[test]
    fn accepts_jku_only_when_it_is_the_registered_jwks_url() {
        let key = TestKey::rsa("r1");
        let keys = PublicKeys::from_jwks(&key.jwks()).unwrap();
        let header = json!({"alg": "RS384", "kid": "r1", "jku": "https://app.example/jwks"});
        let a = key.sign_with_header(&header, &assertion_claims("bulk", TOKEN_URL, now(), "j"));
        assert!(verify_client_assertion(&a, "bulk", &keys, Some("https://app.example/jwks"), TOKEN_URL, now()).is_ok());
        assert_eq!(
            verify_client_assertion(&a, "bulk", &keys, Some("https://app.example/other"), TOKEN_URL, now()),
            Err(AuthError::JkuNotAllowed)
        );
    }

    #[test]
    fn rejects_jku_and_embedded_jwk() {
        let key = TestKey::rsa("r1");
        let keys = PublicKeys::from_jwks(&key.jwks()).unwrap();
        for extra in [json!({"jku": "https://evil/jwks"}), json!({"jwk": key.jwk()})] {
            let mut header = json!({"alg": "RS384", "kid": "r1"});
            header.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let a = key.sign_with_header(&header, &assertion_claims("bulk", TOKEN_URL, now(), "j"));
            assert_eq!(
                verify_client_assertion(&a, "bulk", &keys, None, TOKEN_URL, now()),
                Err(AuthError::JkuNotAllowed)
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        let key = TestKey::rsa("r1");
        let keys = PublicKeys::from_jwks(&key.jwks()).unwrap();
        for bad in ["", "x", "a.b.c", &"A".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(verify_client_assertion(bad, "bulk", &keys, None, TOKEN_URL, now()).is_err());
        }
    }

    #[test]
    fn jwks_without_usable_keys_is_a_configuration_error() {
        assert!(PublicKeys::from_jwks(r#"{"keys": []}"#).is_err());
        assert!(PublicKeys::from_jwks(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
        assert!(PublicKeys::from_jwks("not json").is_err());
    }
}
