//! Schema migrations, embedded in the binary and applied at start, one list per backend.
//! A migration is applied once, inside a transaction, and recorded in `schema_migrations`;
//! never edit one that has shipped, add the next number instead.

pub struct Migration {
    pub version: u32,
    pub sql: &'static str,
}

pub const SQLITE: &[Migration] = &[
    Migration { version: 1, sql: include_str!("../migrations/sqlite/0001_resources.sql") },
    Migration { version: 2, sql: include_str!("../migrations/sqlite/0002_imports.sql") },
    Migration { version: 3, sql: include_str!("../migrations/sqlite/0003_search_indexes.sql") },
    Migration { version: 4, sql: include_str!("../migrations/sqlite/0004_number_quantity_uri.sql") },
    Migration { version: 5, sql: include_str!("../migrations/sqlite/0005_string_collation.sql") },
    Migration { version: 6, sql: include_str!("../migrations/sqlite/0006_auth_state.sql") },
    Migration { version: 7, sql: include_str!("../migrations/sqlite/0007_auth_grants.sql") },
    Migration { version: 8, sql: include_str!("../migrations/sqlite/0008_reference_targets.sql") },
    Migration { version: 9, sql: include_str!("../migrations/sqlite/0009_token_by_resource_param.sql") },
    Migration { version: 10, sql: include_str!("../migrations/sqlite/0010_labelled_resources.sql") },
];

pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, sql: include_str!("../migrations/postgres/0001_resources.sql") },
    Migration { version: 2, sql: include_str!("../migrations/postgres/0002_imports.sql") },
    Migration { version: 3, sql: include_str!("../migrations/postgres/0003_search_indexes.sql") },
    Migration { version: 4, sql: include_str!("../migrations/postgres/0004_number_quantity_uri.sql") },
    Migration { version: 5, sql: include_str!("../migrations/postgres/0005_string_collation.sql") },
    Migration { version: 6, sql: include_str!("../migrations/postgres/0006_auth_state.sql") },
    Migration { version: 7, sql: include_str!("../migrations/postgres/0007_auth_grants.sql") },
    Migration { version: 8, sql: include_str!("../migrations/postgres/0008_reference_targets.sql") },
    Migration { version: 9, sql: include_str!("../migrations/postgres/0009_token_by_resource_param.sql") },
    Migration { version: 10, sql: include_str!("../migrations/postgres/0010_labelled_resources.sql") },
];

pub const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// The migrations not yet applied, given the versions that are.
pub fn pending<'a>(all: &'a [Migration], applied: &[i64]) -> impl Iterator<Item = &'a Migration> {
    all.iter().filter(move |m| !applied.contains(&(m.version as i64)))
}
