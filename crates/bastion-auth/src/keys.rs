//! The server's token-signing key: RSA 2048, RS256 (what SMART's `id_token` needs and every
//! client library verifies), created on first start and kept as PKCS#8 in the data directory.
//!
//! Signing is done here with aws-lc-rs directly (a compact JWS is three base64url parts);
//! verification goes through `jsonwebtoken` with the algorithm pinned to RS256, so a token's
//! own `alg` header never chooses how it is checked.

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AuthError;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "token-signing-key.p8";

pub struct SigningKey {
    pair: KeyPair,
    /// RFC 7638 thumbprint of the public key.
    kid: String,
    n: String,
    e: String,
    decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the key from `dir`, creating it (readable by the owner only) when absent.
    pub fn load_or_create(dir: &Path) -> Result<SigningKey, AuthError> {
        let path = dir.join(KEY_FILE);
        let store_err = |e: std::io::Error| AuthError::KeyStore(format!("{}: {e}", path.display()));
        match std::fs::read(&path) {
            Ok(der) => Self::from_pkcs8(&der),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(store_err)?;
                let key = Self::generate()?;
                let der = key.pair.as_der().map_err(|_| AuthError::BadKey("cannot encode the new key".into()))?;
                write_private(&path, der.as_ref()).map_err(store_err)?;
                Ok(key)
            }
            Err(e) => Err(store_err(e)),
        }
    }

    pub fn generate() -> Result<SigningKey, AuthError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| AuthError::BadKey("RSA key generation".into()))?;
        Self::from_pair(pair)
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, AuthError> {
        let pair = KeyPair::from_pkcs8(der).map_err(|e| AuthError::BadKey(format!("token signing key: {e}")))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<SigningKey, AuthError> {
        let public = pair.public_key();
        let n_bytes = public.modulus().big_endian_without_leading_zero().to_vec();
        let e_bytes = public.exponent().big_endian_without_leading_zero().to_vec();
        let (n, e) = (URL_SAFE_NO_PAD.encode(&n_bytes), URL_SAFE_NO_PAD.encode(&e_bytes));
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let decoding = DecodingKey::from_rsa_raw_components(&n_bytes, &e_bytes);
        Ok(SigningKey { pair, kid, n, e, decoding })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as served at `/auth/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e}]})
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// A compact JWS (RS256) over `claims`, with `typ: JWT`.
    pub fn sign(&self, claims: &Value) -> Result<String, AuthError> {
        self.sign_typed(claims, "JWT")
    }

    /// A compact JWS (RS256) over `claims` with the given `typ`, so that one kind of token
    /// can never be presented as another (RFC 8725 §3.11).
    pub fn sign_typed(&self, claims: &Value, typ: &str) -> Result<String, AuthError> {
        let header = json!({"alg": "RS256", "typ": typ, "kid": self.kid});
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .map_err(|_| AuthError::BadKey("RS256 signing failed".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?
    };
    #[cfg(not(unix))]
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded_with_the_same_kid() {
        let dir = std::env::temp_dir().join(format!("bastion-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = SigningKey::load_or_create(&dir).unwrap();
        let b = SigningKey::load_or_create(&dir).unwrap();
        assert_eq!(a.kid(), b.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the private key is readable by its owner only");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jwks_carries_only_the_public_key() {
        let k = SigningKey::generate().unwrap();
        let jwks = k.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["kid"], k.kid());
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none());
        }
    }
}
