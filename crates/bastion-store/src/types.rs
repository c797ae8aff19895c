//! Plain data that crosses the store boundary.

use bastion_fhir::primitives::Instant;
use bastion_search::IndexRows;

/// How a version came to be (history `request.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }
}

/// One stored version of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    pub last_updated: Instant,
    pub method: Method,
    /// The exact JSON bytes served for this version; `None` for a delete tombstone.
    pub body: Option<Vec<u8>>,
    /// Patient compartments this version belongs to.
    pub compartments: Vec<String>,
    /// Position in the global history (newest is largest).
    pub seq: i64,
}

impl StoredVersion {
    pub fn is_deleted(&self) -> bool {
        self.body.is_none()
    }
}

/// A version about to be written.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    pub last_updated: Instant,
    pub method: Method,
    /// `None` writes a tombstone.
    pub body: Option<Vec<u8>>,
    /// Index rows of the body; for a tombstone, only `compartments` (those of the version it
    /// deletes, so that access to the tombstone follows the record it ends).
    pub index: IndexRows,
}

/// Which history to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryLevel {
    Instance { resource_type: String, id: String },
    Type { resource_type: String },
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub level: HistoryLevel,
    /// Only versions updated at or after this instant.
    pub since: Option<Instant>,
    /// Only versions older than this global position (the paging cursor).
    pub before_seq: Option<i64>,
    /// Only versions at or before this position (a history snapshot, fixed by the first page).
    pub max_seq: Option<i64>,
    pub limit: usize,
}

/// Offset paging for search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    pub with_total: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    pub items: Vec<StoredVersion>,
    pub total: Option<u64>,
}

/// Short-lived authorization state shared by every node: a pending authorization request,
/// an authorization code, an EHR launch context. The store treats the payload as opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A digest of the secret handed out; the secret itself is never stored.
    pub id: String,
    pub kind: &'static str,
    pub payload: String,
    /// Usable until then (Unix seconds).
    pub valid_until: i64,
    /// Remembered until then, so a second use is recognised.
    pub keep_until: i64,
}

/// The outcome of using a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantUse {
    /// This is the first use: here is the payload.
    First(String),
    /// It was used before (a replayed code): here is the payload, to revoke what it produced.
    Again(String),
    /// No such grant, or it has expired.
    Unknown,
}
