//! FHIR R4 knowledge that every other room needs, and nothing that touches I/O.
//!
//! What lives here: the definitions generated from the R4 specification data
//! ([`definitions`]), structural validation against them ([`validate`]), the
//! OperationOutcome builder ([`outcome`]), FHIR primitive formats ([`primitives`]),
//! the security-label vocabulary ([`labels`]),
//! and helpers to assemble Bundles from stored bytes ([`bundle`]).
//!
//! What does not: HTTP, storage, policy. This crate depends on nothing of Bastion's.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod definitions;
pub mod labels;
pub mod outcome;
pub mod primitives;
pub mod validate;

pub use outcome::{Issue, IssueSeverity, IssueType, OperationOutcome};
