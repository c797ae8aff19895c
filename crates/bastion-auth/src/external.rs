//! Access tokens from external identity providers (`[[trusted_issuers]]`: Keycloak, Okta,
//! any OpenID provider that issues JWT access tokens), checked as strictly as this server's
//! own: the algorithm is the one pinned to the key (never the token's choice), then `iss`,
//! `aud`, `exp`, `nbf` and `iat`. Their claims are mapped onto [`AccessClaims`] so that the
//! rest of the server treats them like its own tokens.
//!
//! Pure: the issuer's keys are fetched by the caller.

use jsonwebtoken::Validation;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AuthError;
use crate::assertion::PublicKeys;
use crate::token::{AccessClaims, LEEWAY_SECS, MAX_TOKEN_BYTES, map_jwt_error};

/// Which claims of an external token carry what SMART needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// Space-separated string, or an array of strings (`scp`, as Okta and Azure write it).
    pub scope: String,
    pub fhir_user: String,
    pub patient: String,
    /// Where the user's roles are, as a dotted path (`realm_access.roles` for Keycloak,
    /// `groups` for Okta): an array of strings or a space-separated string. `None`: the
    /// issuer's tokens carry no roles.
    pub roles: Option<String>,
    /// Where the user's organization is (`Organization/[id]`, or a bare id), dotted path.
    pub organization: Option<String>,
    /// Where the user's clearance is (a confidentiality code `U`..`V`), dotted path.
    pub clearance: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            scope: "scope".into(),
            fhir_user: "fhirUser".into(),
            patient: "patient".into(),
            roles: None,
            organization: None,
            clearance: None,
        }
    }
}

/// The claim at a dotted path (`realm_access.roles`).
fn at_path<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// Role names from a claim: an array of strings or one space-separated string.
fn role_names(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// One trusted issuer, as its tokens are checked.
#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    pub issuer: String,
    pub audience: String,
    pub mapping: ClaimMapping,
}

/// The `kid` of a token's header, to pick the key to fetch.
pub fn header_kid(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// The unverified `iss` of a token: only to route it to the right verifier.
pub fn unverified_issuer(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

fn text(claims: &Value, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Verifies an external access token and maps its claims.
pub fn verify_external(
    token: &str,
    issuer: &ExternalIssuer,
    keys: &PublicKeys,
    now: i64,
) -> Result<AccessClaims, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Oversized);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
    let (key, alg) = keys.find(header.kid.as_deref(), header.alg)?;
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS as u64;
    v.validate_nbf = true;
    v.set_issuer(&[&issuer.issuer]);
    v.set_audience(&[&issuer.audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(token, key, &v).map_err(map_jwt_error)?.claims;
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(AuthError::MissingClaim("exp"))?;
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(now);
    if iat > now + LEEWAY_SECS {
        return Err(AuthError::IssuedInFuture);
    }
    if exp + LEEWAY_SECS < now {
        return Err(AuthError::Expired);
    }
    let sub = text(&claims, "sub").ok_or(AuthError::MissingClaim("sub"))?;
    let scope = match claims.get(&issuer.mapping.scope).or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    };
    let client_id = text(&claims, "client_id")
        .or_else(|| text(&claims, "azp"))
        .or_else(|| text(&claims, "cid"))
        .unwrap_or_else(|| sub.clone());
    // An id for revocation and audit that is stable for this token.
    let jti = match text(&claims, "jti") {
        Some(j) => format!("ext:{j}"),
        None => format!("ext:{}", hex::encode(&Sha256::digest(token.as_bytes())[..16])),
    };
    let patient = text(&claims, &issuer.mapping.patient).map(|p| p.strip_prefix("Patient/").unwrap_or(&p).to_string());
    Ok(AccessClaims {
        iss: issuer.issuer.clone(),
        sub,
        aud: issuer.audience.clone(),
        exp,
        iat,
        jti,
        client_id,
        scope,
        patient,
        encounter: text(&claims, "encounter"),
        fhir_user: text(&claims, &issuer.mapping.fhir_user),
        purpose_of_use: None,
        family: None,
        roles: issuer.mapping.roles.as_deref().map(|path| role_names(at_path(&claims, path))),
        organization: issuer
            .mapping
            .organization
            .as_deref()
            .and_then(|path| at_path(&claims, path))
            .and_then(Value::as_str)
            .map(|o| if o.starts_with("Organization/") { o.to_string() } else { format!("Organization/{o}") })
            .filter(|o| o.strip_prefix("Organization/").is_some_and(bastion_fhir::primitives::is_valid_id)),
        // Passed on as written: the server decides what a code it does not know means.
        clearance: issuer
            .mapping
            .clearance
            .as_deref()
            .map(|path| at_path(&claims, path).and_then(Value::as_str).unwrap_or_default().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assertion::KeyProfile;
    use crate::assertion::testkit::TestKey;
    use serde_json::json;

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn issuer() -> ExternalIssuer {
        ExternalIssuer {
            issuer: "https://idp/realms/fhir".into(),
            audience: "https://h/fhir".into(),
            mapping: ClaimMapping::default(),
        }
    }

    fn claims() -> Value {
        json!({"iss": "https://idp/realms/fhir", "aud": ["https://h/fhir", "account"], "sub": "u1", "azp": "app",
               "exp": now() + 300, "iat": now(), "scope": "openid patient/*.rs", "patient": "Patient/p1",
               "fhirUser": "Practitioner/d1", "jti": "abc"})
    }

    /// An EC P-384 test key as an issuer key: ES384.
    fn keyed() -> (TestKey, PublicKeys) {
        let k = TestKey::ec("idp-1");
        let keys = PublicKeys::from_jwks_for(&k.jwks(), KeyProfile::IssuerTokens).unwrap();
        (k, keys)
    }

    #[test]
    fn maps_claims_of_a_valid_token() {
        let (k, keys) = keyed();
        let c = verify_external(&k.sign(&claims()), &issuer(), &keys, now()).unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.client_id, "app");
        assert_eq!(c.scope, "openid patient/*.rs");
        assert_eq!(c.patient.as_deref(), Some("p1"), "a bare id");
        assert_eq!(c.fhir_user.as_deref(), Some("Practitioner/d1"));
        assert_eq!(c.jti, "ext:abc");
    }

    #[test]
    fn maps_roles_and_organization_at_configured_paths() {
        let (k, keys) = keyed();
        let mut cl = claims();
        cl["realm_access"] = json!({"roles": ["ward-a", "offline_access"]});
        cl["org"] = json!("general-hospital");
        let mut i = issuer();
        let token = k.sign(&cl);
        let c = verify_external(&token, &i, &keys, now()).unwrap();
        assert_eq!(c.roles, None, "no roles unless a claim is configured");
        assert_eq!(c.organization, None);
        i.mapping.roles = Some("realm_access.roles".into());
        i.mapping.organization = Some("org".into());
        let c = verify_external(&token, &i, &keys, now()).unwrap();
        assert_eq!(c.roles, Some(vec!["ward-a".to_string(), "offline_access".to_string()]));
        assert_eq!(c.organization.as_deref(), Some("Organization/general-hospital"));
        cl["org"] = json!("Organization/not an id");
        cl["realm_access"] = json!({"roles": "ward-a ward-b"});
        let c = verify_external(&k.sign(&cl), &i, &keys, now()).unwrap();
        assert_eq!(c.organization, None, "an organization that is no reference is dropped");
        assert_eq!(c.roles, Some(vec!["ward-a".to_string(), "ward-b".to_string()]));
    }

    #[test]
    fn roles_organization_and_clearance_are_never_written_into_a_token() {
        let claims = AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: 0,
            iat: 0,
            jti: "j".into(),
            client_id: "c".into(),
            scope: String::new(),
            patient: None,
            encounter: None,
            fhir_user: None,
            purpose_of_use: None,
            family: None,
            roles: Some(vec!["admin".into()]),
            organization: Some("Organization/x".into()),
            clearance: Some("V".into()),
        };
        let written = serde_json::to_value(&claims).unwrap();
        assert!(written.get("roles").is_none() && written.get("organization").is_none(), "{written}");
        assert!(written.get("clearance").is_none(), "{written}");
    }

    #[test]
    fn reads_scp_arrays() {
        let (k, keys) = keyed();
        let mut cl = claims();
        cl.as_object_mut().unwrap().remove("scope");
        cl["scp"] = json!(["system/Patient.rs", "system/Observation.rs"]);
        let c = verify_external(&k.sign(&cl), &issuer(), &keys, now()).unwrap();
        assert_eq!(c.scope, "system/Patient.rs system/Observation.rs");
    }

    #[test]
    fn rejects_wrong_audience() {
        let (k, keys) = keyed();
        let mut cl = claims();
        cl["aud"] = json!("https://other/fhir");
        assert_eq!(verify_external(&k.sign(&cl), &issuer(), &keys, now()), Err(AuthError::WrongAudience));
    }

    #[test]
    fn rejects_wrong_issuer() {
        let (k, keys) = keyed();
        let mut cl = claims();
        cl["iss"] = json!("https://evil/realms/fhir");
        assert_eq!(verify_external(&k.sign(&cl), &issuer(), &keys, now()), Err(AuthError::WrongIssuer));
    }

    #[test]
    fn rejects_expired_and_future_tokens() {
        let (k, keys) = keyed();
        let mut cl = claims();
        cl["exp"] = json!(now() - 600);
        assert!(verify_external(&k.sign(&cl), &issuer(), &keys, now()).is_err());
        let mut cl = claims();
        cl["iat"] = json!(now() + 600);
        cl["exp"] = json!(now() + 900);
        assert_eq!(verify_external(&k.sign(&cl), &issuer(), &keys, now()), Err(AuthError::IssuedInFuture));
    }

    #[test]
    fn rejects_algorithm_other_than_the_keys() {
        let (k, keys) = keyed();
        let header = json!({"alg": "ES256", "kid": "idp-1"});
        let t = k.sign_with_header(&header, &claims());
        assert_eq!(verify_external(&t, &issuer(), &keys, now()), Err(AuthError::AlgorithmNotAllowed));
    }

    #[test]
    fn rejects_unknown_kid() {
        let (_, keys) = keyed();
        let other = TestKey::ec("someone-else");
        assert_eq!(verify_external(&other.sign(&claims()), &issuer(), &keys, now()), Err(AuthError::UnknownKey));
    }
}
