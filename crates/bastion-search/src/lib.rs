//! FHIR search: URL parameters to a typed, validated query, the access predicate that the
//! policy layer attaches to every query, and the index rows a resource produces at write time.
//!
//! This crate decides *what* a query means; it never runs one. The store compiles
//! [`SearchQuery`] and [`AccessPredicate`] into SQL, and evaluates [`AccessPredicate`] in
//! memory on what it returns (two evaluators, one definition).
//!
//! Scope today: `_id`, `_lastUpdated` and token parameters (the part conditional
//! interactions need). The full R4 search grammar extends [`query`] and [`index`].
#![forbid(unsafe_code)]

pub mod access;
pub mod fhirpath;
pub mod index;
pub mod query;

pub use access::{AccessPredicate, AccessRow};
pub use index::{
    DateRow, IndexRows, NumberRow, QuantityRow, ReferenceRow, StringRow, TokenRow, UriRow, extract_index,
    is_indexed_kind,
};
pub use query::{Clause, Include, SearchError, SearchQuery, SortBy, SortKey, TokenValue};
