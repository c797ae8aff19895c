//! The store's one error type. Messages here go to logs, never to clients: the HTTP edge
//! maps each variant to an OperationOutcome that reveals nothing of the database.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    /// Another writer changed the same resource at the same time (PostgreSQL unique
    /// violation on create); the client may retry.
    #[error("concurrent write conflict on {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// `If-Match` named a version that is not the current one.
    #[error("version conflict: expected {expected}, current {current}")]
    VersionConflict { expected: u64, current: u64 },
    /// The resource body could not be serialised (never happens for a parsed Value).
    #[error("cannot serialise resource: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("migration {version} failed: {reason}")]
    Migration { version: u32, reason: String },
}
