//! SMART on FHIR authorization for Bastion.
//!
//! Today: the scope grammar ([`scope`]): SMART v1 and v2 scopes, granular filters, launch and
//! identity scopes, and the grant rule (what was asked ∩ what the client may have ∩ what the
//! user's roles allow). Pure code, no I/O. The authorization server (codes, tokens, clients,
//! keys) builds on it.
#![forbid(unsafe_code)]

pub mod scope;

pub use scope::{Perms, ResourceScope, Scope, ScopeContext, ScopeError, ScopeSet, TypeSel};
