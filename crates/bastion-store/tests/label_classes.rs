//! Migration 11 classifies the `_security` rows of data indexed before label classes existed
//! with SQL generated from the label vocabulary; the index classifies new writes in Rust. The
//! two must agree on every label, known or not: run the generated `CASE` on real SQLite and
//! (when `BASTION_TEST_POSTGRES_URL` is set) real PostgreSQL for each label of the vocabulary
//! and a few unknown ones, and compare with `class_key`.

use bastion_fhir::labels::{
    ACT_CODE_SYSTEM, ACT_REASON_SYSTEM, CONFIDENTIALITY_SYSTEM, Confidentiality, HANDLING_CAVEATS, INTEGRITY,
    OBSERVATION_VALUE_SYSTEM, PURPOSES, SENSITIVITY, class_key, class_key_sql,
};

fn labels() -> Vec<(Option<String>, String)> {
    let mut out: Vec<(Option<String>, String)> = Vec::new();
    let mut add = |system: Option<&str>, codes: &[&str]| {
        out.extend(codes.iter().map(|c| (system.map(str::to_string), c.to_string())));
    };
    let conf: Vec<&str> = Confidentiality::ALL.iter().map(|c| c.code()).collect();
    add(Some(CONFIDENTIALITY_SYSTEM), &conf);
    add(Some(CONFIDENTIALITY_SYSTEM), &["PSY", "X", "n"]);
    add(Some(ACT_CODE_SYSTEM), SENSITIVITY);
    add(Some(ACT_CODE_SYSTEM), HANDLING_CAVEATS);
    add(Some(ACT_CODE_SYSTEM), &["HTEST", "NORDSLCD", "R", "TREAT"]);
    add(Some(ACT_REASON_SYSTEM), PURPOSES);
    add(Some(ACT_REASON_SYSTEM), &["HTEST", "PSY", "NOPE"]);
    add(Some(OBSERVATION_VALUE_SYSTEM), INTEGRITY);
    add(Some(OBSERVATION_VALUE_SYSTEM), &["PSY"]);
    add(Some("http://example.org/labels"), &["secret", "R"]);
    add(None, &["R", "PSY", "HTEST"]);
    out
}

#[test]
fn migration_classes_agree_with_the_index_on_sqlite() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let sql = format!("SELECT {} FROM (SELECT ?1 AS system, ?2 AS code)", class_key_sql());
    for (system, code) in labels() {
        let got: String = conn.query_row(&sql, rusqlite::params![system, code], |r| r.get(0)).unwrap();
        assert_eq!(got, class_key(system.as_deref(), &code), "{system:?} {code}");
    }
}

#[tokio::test]
async fn migration_classes_agree_with_the_index_on_postgres() {
    let Ok(url) = std::env::var("BASTION_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: PostgreSQL half (BASTION_TEST_POSTGRES_URL not set)");
        return;
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let sql = format!("SELECT {} FROM (SELECT $1::text AS system, $2::text AS code) x", class_key_sql());
    for (system, code) in labels() {
        let row = client.query_one(&sql, &[&system, &code]).await.unwrap();
        let got: String = row.get(0);
        assert_eq!(got, class_key(system.as_deref(), &code), "{system:?} {code}");
    }
}

/// A database indexed before label classes existed gets them from migration 11: its rows are
/// removed and the migration marked unapplied, then the store is opened again.
#[tokio::test]
async fn migration_adds_the_classes_of_data_indexed_before() {
    let dir = std::env::temp_dir().join(format!("bastion-store-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/s.db", dir.display());
    let store = bastion_store::open(&url).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let o = serde_json::json!({"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
        "meta": {"security": [{"system": ACT_CODE_SYSTEM, "code": "PSY"}, {"code": "R"}]}});
    bastion_store::interactions::update(&mut *tx, "Observation", "o", o, None, bastion_store::Method::Put)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(store);
    let classes = |conn: &rusqlite::Connection| -> Vec<String> {
        let mut stmt = conn.prepare("SELECT code FROM idx_token WHERE param = '_label-class' ORDER BY code").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let conn = rusqlite::Connection::open(dir.join("s.db")).unwrap();
    assert_eq!(classes(&conn), vec!["sens:PSY", "unknown"], "a new write is classified by the index");
    conn.execute_batch(
        "DELETE FROM idx_token WHERE param = '_label-class'; DELETE FROM schema_migrations WHERE version = 11;",
    )
    .unwrap();
    drop(conn);
    drop(bastion_store::open(&url).await.unwrap());
    let conn = rusqlite::Connection::open(dir.join("s.db")).unwrap();
    assert_eq!(classes(&conn), vec!["sens:PSY", "unknown"], "the migration wrote them again");
    let _ = std::fs::remove_dir_all(dir);
}
