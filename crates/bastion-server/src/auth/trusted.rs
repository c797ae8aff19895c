//! External identity providers (`[[trusted_issuers]]`): where their keys are, found once from
//! the issuer's OpenID discovery document unless `jwks_uri` is configured, and fetched as
//! [`RemoteJwks`] does for clients. The token checks themselves are
//! [`bastion_auth::external::verify_external`].

use bastion_auth::AuthError;
use bastion_auth::assertion::KeyProfile;
use bastion_auth::external::{ClaimMapping, ExternalIssuer, header_kid, verify_external};
use bastion_auth::token::AccessClaims;
use tokio::sync::OnceCell;

use super::check_secure_url;
use super::remote_jwks::RemoteJwks;
use crate::config::TrustedIssuerConfig;

pub(super) struct TrustedIssuer {
    pub spec: ExternalIssuer,
    configured_jwks_uri: Option<String>,
    keys: OnceCell<RemoteJwks>,
    http: reqwest::Client,
}

impl TrustedIssuer {
    pub fn from_config(c: &TrustedIssuerConfig, http: &reqwest::Client) -> Result<TrustedIssuer, String> {
        let err = |r: &str| format!("trusted issuer {}: {r}", c.issuer);
        check_secure_url(&c.issuer).map_err(err)?;
        if let Some(u) = &c.jwks_uri {
            check_secure_url(u).map_err(|r| err(&format!("jwks_uri: {r}")))?;
        }
        if c.audience.is_empty() {
            return Err(err("audience is empty"));
        }
        let d = ClaimMapping::default();
        Ok(TrustedIssuer {
            spec: ExternalIssuer {
                issuer: c.issuer.clone(),
                audience: c.audience.clone(),
                mapping: ClaimMapping {
                    scope: c.scope_claim.clone().unwrap_or(d.scope),
                    fhir_user: c.fhir_user_claim.clone().unwrap_or(d.fhir_user),
                    patient: c.patient_claim.clone().unwrap_or(d.patient),
                    roles: c.roles_claim.clone(),
                    organization: c.organization_claim.clone(),
                    clearance: c.clearance_claim.clone(),
                },
            },
            configured_jwks_uri: c.jwks_uri.clone(),
            keys: OnceCell::new(),
            http: http.clone(),
        })
    }

    /// The issuer's `jwks_uri` from `{issuer}/.well-known/openid-configuration`, whose
    /// `issuer` must be this one.
    async fn discover(&self) -> Result<String, AuthError> {
        let url = format!("{}/.well-known/openid-configuration", self.spec.issuer.trim_end_matches('/'));
        let doc: serde_json::Value = self
            .http
            .get(&url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .map_err(|_| AuthError::JwksUnavailable)?
            .error_for_status()
            .map_err(|_| AuthError::JwksUnavailable)?
            .json()
            .await
            .map_err(|_| AuthError::JwksUnavailable)?;
        if doc["issuer"].as_str() != Some(self.spec.issuer.as_str()) {
            return Err(AuthError::WrongIssuer);
        }
        let jwks_uri = doc["jwks_uri"].as_str().ok_or(AuthError::JwksUnavailable)?;
        check_secure_url(jwks_uri).map_err(|_| AuthError::JwksUnavailable)?;
        Ok(jwks_uri.to_string())
    }

    pub async fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, AuthError> {
        let remote = self
            .keys
            .get_or_try_init(|| async {
                let uri = match &self.configured_jwks_uri {
                    Some(u) => u.clone(),
                    None => self.discover().await?,
                };
                Ok::<_, AuthError>(RemoteJwks::new(uri, KeyProfile::IssuerTokens, self.http.clone()))
            })
            .await?;
        let keys = remote.keys(header_kid(token).as_deref(), now).await?;
        verify_external(token, &self.spec, &keys, now)
    }
}
