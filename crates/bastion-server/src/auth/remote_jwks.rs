//! Public keys published at a URL (a client's registered `jwks_uri`, or an external
//! issuer's), fetched when needed and kept
//! no longer than the response's `Cache-Control` allows (SMART: "the JWKS must not be cached
//! longer than the client's Cache-Control allows").
//!
//! Rules: `no-store` or `no-cache` or `max-age=0` means fetch again on every assertion; a
//! `max-age` is honoured up to a day; without one, five minutes. An assertion naming a `kid`
//! the cached set lacks triggers one early refetch (the client rotated its keys), at most once
//! every [`REFETCH_INTERVAL_SECS`], so a stream of made-up kids cannot make the server hammer
//! the client's host. A fetch has a 5-second deadline and a 64 KiB limit.
//!
//! Not here: which URLs are allowed (checked at start by `check_secure_url`: `https`, or
//! `http` on loopback only).

use std::sync::Arc;
use std::time::Duration;

use bastion_auth::AuthError;
use bastion_auth::assertion::{KeyProfile, PublicKeys};
use tokio::sync::Mutex;

const DEFAULT_CACHE_SECS: i64 = 300;
const MAX_CACHE_SECS: i64 = 86_400;
pub(super) const REFETCH_INTERVAL_SECS: i64 = 2;
const MAX_JWKS_BYTES: usize = 64 * 1024;

struct Cached {
    keys: Arc<PublicKeys>,
    fresh_until: i64,
    fetched_at: i64,
}

pub(super) struct RemoteJwks {
    pub url: String,
    profile: KeyProfile,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

/// How long a response may be reused, from its `Cache-Control` header.
pub(super) fn cache_lifetime(cache_control: Option<&str>) -> i64 {
    let Some(cc) = cache_control else { return DEFAULT_CACHE_SECS };
    let mut max_age = None;
    for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if d == "no-store" || d == "no-cache" {
            return 0;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            max_age = Some(v.trim_matches('"').parse::<i64>().unwrap_or(0));
        }
    }
    max_age.map_or(DEFAULT_CACHE_SECS, |a| a.clamp(0, MAX_CACHE_SECS))
}

impl RemoteJwks {
    pub fn new(url: String, profile: KeyProfile, http: reqwest::Client) -> RemoteJwks {
        RemoteJwks { url, profile, http, cached: Mutex::new(None) }
    }

    /// The client's keys, for an assertion naming `kid`.
    pub async fn keys(&self, kid: Option<&str>, now: i64) -> Result<Arc<PublicKeys>, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let knows_kid = kid.is_none_or(|k| c.keys.has_kid(k));
            let fresh = now < c.fresh_until;
            if fresh && (knows_kid || now - c.fetched_at < REFETCH_INTERVAL_SECS) {
                return Ok(c.keys.clone());
            }
        }
        match self.fetch().await {
            Ok((keys, lifetime)) => {
                let keys = Arc::new(keys);
                *cached = Some(Cached { keys: keys.clone(), fresh_until: now + lifetime, fetched_at: now });
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, "a client's JWKS could not be fetched");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<(PublicKeys, i64), AuthError> {
        let response = self
            .http
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json, application/jwk-set+json")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|_| AuthError::JwksUnavailable)?;
        if !response.status().is_success() {
            return Err(AuthError::JwksUnavailable);
        }
        if response.content_length().is_some_and(|n| n as usize > MAX_JWKS_BYTES) {
            return Err(AuthError::JwksUnavailable);
        }
        let lifetime =
            cache_lifetime(response.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()));
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|_| AuthError::JwksUnavailable)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(AuthError::JwksUnavailable);
            }
        }
        let text = std::str::from_utf8(&body).map_err(|_| AuthError::JwksUnavailable)?;
        let keys = PublicKeys::from_jwks_for(text, self.profile).map_err(|_| AuthError::JwksUnavailable)?;
        Ok((keys, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetime_follows_cache_control() {
        assert_eq!(cache_lifetime(None), DEFAULT_CACHE_SECS);
        assert_eq!(cache_lifetime(Some("max-age=60")), 60);
        assert_eq!(cache_lifetime(Some("public, max-age=120")), 120);
        assert_eq!(cache_lifetime(Some("max-age=0")), 0);
        assert_eq!(cache_lifetime(Some("no-store")), 0);
        assert_eq!(cache_lifetime(Some("max-age=600, no-cache")), 0);
        assert_eq!(cache_lifetime(Some("max-age=99999999")), MAX_CACHE_SECS);
        assert_eq!(cache_lifetime(Some("max-age=garbage")), 0, "unreadable means do not reuse");
    }

    #[test]
    fn jwks_uri_must_be_https_or_loopback_http() {
        use super::super::check_secure_url;
        assert!(check_secure_url("https://app.example/jwks").is_ok());
        assert!(check_secure_url("http://127.0.0.1:9999/jwks").is_ok());
        assert!(check_secure_url("http://localhost/jwks").is_ok());
        assert!(check_secure_url("http://[::1]:80/jwks").is_ok());
        assert!(check_secure_url("http://app.example/jwks").is_err());
        assert!(check_secure_url("http://127.0.0.1.evil.example/jwks").is_err());
        assert!(check_secure_url("http://localhost@evil.example/jwks").is_err());
        assert!(check_secure_url("ftp://x/jwks").is_err());
    }
}
