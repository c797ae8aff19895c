//! Storage: the [`Store`] trait and its two backends, SQLite (embedded default) and
//! PostgreSQL.
//!
//! What the store knows: resource versions as the exact bytes that are served, full
//! history with tombstones, the patient-compartment membership of every version, the index
//! rows search matches against, and how to compile a [`SearchQuery`] and an
//! [`AccessPredicate`] into SQL. Every read path takes an `AccessPredicate` and applies it
//! *inside* the SQL, then re-checks each row in memory.
//!
//! What it does not know: HTTP, FHIR REST semantics beyond versions (see
//! [`interactions`] for the write rules both backends share), or who the caller is.
#![forbid(unsafe_code)]

mod error;
pub mod interactions;
mod migrations;
mod ops;
mod postgres;
mod sql;
mod sqlite;
mod types;

use std::sync::Arc;

use async_trait::async_trait;
use bastion_search::{AccessPredicate, SearchQuery};

pub use error::StoreError;
pub use types::*;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Read paths and the way into a write transaction. One implementation per backend.
#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Starts a write transaction. Dropping it without [`StoreTx::commit`] rolls back.
    async fn begin(&self) -> Result<Box<dyn StoreTx>>;

    /// The current version of a resource (a tombstone when deleted), if the access
    /// predicate admits it.
    async fn read(&self, access: &AccessPredicate, resource_type: &str, id: &str) -> Result<Option<StoredVersion>>;

    /// One version of a resource, if it exists and the access predicate admits it.
    async fn vread(
        &self,
        access: &AccessPredicate,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredVersion>>;

    /// Versions newest first, at instance, type or system level.
    async fn history(&self, access: &AccessPredicate, query: &HistoryQuery) -> Result<Vec<StoredVersion>>;

    /// Current, non-deleted resources matching `query`, in a stable order.
    async fn search(&self, access: &AccessPredicate, query: &SearchQuery, page: Page) -> Result<SearchPage>;

    /// Has `bastion import` already loaded a file with this SHA-256 (hex)?
    async fn imported(&self, sha256: &str) -> Result<bool>;

    /// Is any of these token ids (an access token's `jti`, its refresh family) revoked?
    async fn any_revoked(&self, token_ids: &[String]) -> Result<bool>;

    /// A grant's payload while it is valid and not used yet; does not use it.
    async fn peek_grant(&self, kind: &str, id: &str, now: i64) -> Result<Option<String>>;

    /// The sequence number of the latest version of any resource of these types (0 when
    /// none): a cheap way to know that a cache of them is stale.
    async fn latest_change(&self, types: &[&str]) -> Result<i64>;
}

/// A write transaction: every change inside it lands together or not at all.
#[async_trait]
pub trait StoreTx: Send {
    /// The current version of a resource, locked against concurrent writers until the
    /// transaction ends. Ignores access: callers check it on what they get.
    async fn current(&mut self, resource_type: &str, id: &str) -> Result<Option<StoredVersion>>;

    /// Writes a new version (and its index rows), making it current.
    async fn write_version(&mut self, version: NewVersion) -> Result<()>;

    /// Ids of current resources matching `query` (at most `limit`), as seen inside this
    /// transaction.
    async fn find_ids(&mut self, access: &AccessPredicate, query: &SearchQuery, limit: usize) -> Result<Vec<String>>;

    /// Records a client assertion's `jti` until `expires_at` (Unix seconds, with `now` to
    /// drop expired records); `false` when the client has used it before. Committed, the
    /// record is seen by every node on the same database.
    async fn remember_jti(&mut self, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool>;

    /// Revokes a token id (an access token's `jti`, or a refresh family) until `expires_at`.
    async fn revoke(&mut self, token_id: &str, expires_at: i64, now: i64) -> Result<()>;

    /// Stores an authorization grant (pending request, code, launch context).
    async fn put_grant(&mut self, grant: &Grant, now: i64) -> Result<()>;

    /// Uses a grant once: [`GrantUse::First`] for the first use within its validity,
    /// [`GrantUse::Again`] for every later one (while the row is kept).
    async fn use_grant(&mut self, kind: &str, id: &str, now: i64) -> Result<GrantUse>;

    /// Records an imported file in the same transaction as its resources.
    async fn record_import(&mut self, sha256: &str, name: &str, resources: u64) -> Result<()>;

    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Opens the store named by a storage URL (`sqlite://path` or `postgres://...`) and
/// applies pending migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sqlite::SqliteStore::open(path)?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::Config("storage.url must start with sqlite:// or postgres://".into()))
    }
}
