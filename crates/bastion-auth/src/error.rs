//! What can go wrong while authenticating a client or validating a token.
//!
//! Every variant names the check that failed, for tests and for the audit trail. None of them
//! is shown to a client as such: the token endpoint answers `invalid_client` /
//! `invalid_grant` / `invalid_request`, the resource server a bare 401 (see [`AuthError::oauth_error`]).

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    // Token and assertion structure
    #[error("the token is not a compact JWS")]
    Malformed,
    #[error("the token is larger than this server accepts")]
    Oversized,
    #[error("the JWS header names an algorithm that is not allowed for this key")]
    AlgorithmNotAllowed,
    #[error("the JWS header has no kid, or a kid that matches no key")]
    UnknownKey,
    #[error("the JWS header carries a jku that is not allowed")]
    JkuNotAllowed,
    #[error("the signature does not verify")]
    BadSignature,
    // Claims
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the issuer is not the expected one")]
    WrongIssuer,
    #[error("the audience is not the expected one")]
    WrongAudience,
    #[error("a required claim is missing: {0}")]
    MissingClaim(&'static str),
    #[error("the assertion's iss and sub differ, or are not the client id")]
    SubjectMismatch,
    #[error("the assertion expires too far ahead")]
    ExpiresTooLate,
    #[error("the assertion's jti has been used before")]
    ReplayedJti,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the JWS typ says this is another kind of token")]
    WrongTokenType,
    // Authorization codes, refresh tokens, PKCE
    #[error("the grant is invalid: {0}")]
    InvalidGrant(&'static str),
    // Clients
    #[error("the client's JWKS URL could not be fetched or read")]
    JwksUnavailable,
    #[error("no client is registered with this id")]
    UnknownClient,
    #[error("the client's credentials are wrong")]
    BadClientCredentials,
    #[error("the client may not use this grant or authentication method")]
    UnauthorizedClient,
    #[error("the grant type is not supported")]
    UnsupportedGrantType,
    #[error("the request is malformed: {0}")]
    InvalidRequest(&'static str),
    #[error("no scope that was asked for can be granted")]
    InvalidScope,
    // Keys
    #[error("the key store could not be read or written: {0}")]
    KeyStore(String),
    #[error("a configured key is unusable: {0}")]
    BadKey(String),
}

impl AuthError {
    /// The RFC 6749 `error` code a token endpoint answers with, and its HTTP status.
    pub fn oauth_error(&self) -> (&'static str, u16) {
        match self {
            AuthError::UnsupportedGrantType => ("unsupported_grant_type", 400),
            AuthError::InvalidRequest(_) | AuthError::Malformed | AuthError::Oversized => ("invalid_request", 400),
            AuthError::InvalidScope => ("invalid_scope", 400),
            AuthError::InvalidGrant(_) => ("invalid_grant", 400),
            AuthError::UnauthorizedClient => ("unauthorized_client", 400),
            AuthError::KeyStore(_) | AuthError::BadKey(_) => ("server_error", 500),
            // Anything about who the client is, or its assertion.
            _ => ("invalid_client", 401),
        }
    }
}
