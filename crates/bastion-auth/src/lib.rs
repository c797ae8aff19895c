//! SMART on FHIR authorization for Bastion: the pure and cryptographic parts.
//!
//! - [`scope`]: SMART v1 and v2 scopes, granular filters, launch and identity scopes, and the
//!   grant rule (what was asked ∩ what the client may have ∩ what the user's roles allow);
//! - [`keys`] and [`token`]: the server's RS256 signing key and the access, refresh and id
//!   tokens it issues and validates;
//! - [`assertion`]: `private_key_jwt` client assertions (RS384 / ES384) and public key sets;
//! - [`external`]: access tokens of external identity providers (`[[trusted_issuers]]`);
//! - [`pkce`]: S256 code challenges and verifiers;
//! - [`purpose`]: which purpose of use a token may carry;
//! - [`secret`]: Argon2id passwords and constant-time client-secret comparison.
//!
//! No I/O except reading and writing the key file: state that must be shared by every node
//! (replayed `jti`s, revocations) is the store's, and the HTTP endpoints are the server's.
#![forbid(unsafe_code)]

pub mod assertion;
mod error;
pub mod external;
pub mod keys;
pub mod pkce;
pub mod purpose;
pub mod scope;
pub mod secret;
pub mod token;

pub use error::AuthError;
pub use scope::{
    Ceiling, Perms, ResourceScope, Scope, ScopeContext, ScopeError, ScopeSet, TypeSel, category_sub_scopes,
};
