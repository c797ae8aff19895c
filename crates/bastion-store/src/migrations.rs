//! Schema migrations, embedded in the binary and applied at start, one list per backend.
//! A migration is applied once, inside a transaction, and recorded in `schema_migrations`;
//! never edit one that has shipped, add the next number instead.

pub struct Migration {
    pub version: u32,
    pub sql: &'static str,
    /// SQL written by the code from its own tables, run after `sql` in the same transaction
    /// (data that a fixed file could only derive by copying those tables).
    pub generated: Option<fn() -> String>,
}

impl Migration {
    /// The whole migration's SQL.
    pub fn text(&self) -> String {
        match self.generated {
            Some(g) => format!("{}\n{};", self.sql, g()),
            None => self.sql.to_string(),
        }
    }
}

/// Migration 11: the class row of every `_security` token row indexed before classes were.
fn label_classes() -> String {
    format!(
        "INSERT INTO idx_token (res_pk, res_type, param, system, code, compartment_key) \
         SELECT res_pk, res_type, '{}', NULL, {}, compartment_key FROM idx_token WHERE param = '_security'",
        bastion_fhir::labels::LABEL_CLASS_PARAM,
        bastion_fhir::labels::class_key_sql()
    )
}

pub const SQLITE: &[Migration] = &[
    Migration { version: 1, sql: include_str!("../migrations/sqlite/0001_resources.sql"), generated: None },
    Migration { version: 2, sql: include_str!("../migrations/sqlite/0002_imports.sql"), generated: None },
    Migration { version: 3, sql: include_str!("../migrations/sqlite/0003_search_indexes.sql"), generated: None },
    Migration { version: 4, sql: include_str!("../migrations/sqlite/0004_number_quantity_uri.sql"), generated: None },
    Migration { version: 5, sql: include_str!("../migrations/sqlite/0005_string_collation.sql"), generated: None },
    Migration { version: 6, sql: include_str!("../migrations/sqlite/0006_auth_state.sql"), generated: None },
    Migration { version: 7, sql: include_str!("../migrations/sqlite/0007_auth_grants.sql"), generated: None },
    Migration { version: 8, sql: include_str!("../migrations/sqlite/0008_reference_targets.sql"), generated: None },
    Migration {
        version: 9,
        sql: include_str!("../migrations/sqlite/0009_token_by_resource_param.sql"),
        generated: None,
    },
    Migration { version: 10, sql: include_str!("../migrations/sqlite/0010_labelled_resources.sql"), generated: None },
    Migration {
        version: 11,
        sql: include_str!("../migrations/sqlite/0011_label_classes.sql"),
        generated: Some(label_classes),
    },
];

pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, sql: include_str!("../migrations/postgres/0001_resources.sql"), generated: None },
    Migration { version: 2, sql: include_str!("../migrations/postgres/0002_imports.sql"), generated: None },
    Migration { version: 3, sql: include_str!("../migrations/postgres/0003_search_indexes.sql"), generated: None },
    Migration { version: 4, sql: include_str!("../migrations/postgres/0004_number_quantity_uri.sql"), generated: None },
    Migration { version: 5, sql: include_str!("../migrations/postgres/0005_string_collation.sql"), generated: None },
    Migration { version: 6, sql: include_str!("../migrations/postgres/0006_auth_state.sql"), generated: None },
    Migration { version: 7, sql: include_str!("../migrations/postgres/0007_auth_grants.sql"), generated: None },
    Migration { version: 8, sql: include_str!("../migrations/postgres/0008_reference_targets.sql"), generated: None },
    Migration {
        version: 9,
        sql: include_str!("../migrations/postgres/0009_token_by_resource_param.sql"),
        generated: None,
    },
    Migration { version: 10, sql: include_str!("../migrations/postgres/0010_labelled_resources.sql"), generated: None },
    Migration {
        version: 11,
        sql: include_str!("../migrations/postgres/0011_label_classes.sql"),
        generated: Some(label_classes),
    },
];

pub const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// The migrations not yet applied, given the versions that are.
pub fn pending<'a>(all: &'a [Migration], applied: &[i64]) -> impl Iterator<Item = &'a Migration> {
    all.iter().filter(move |m| !applied.contains(&(m.version as i64)))
}
