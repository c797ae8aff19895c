//! Stores for the integration tests: real SQLite in a temporary directory and, when
//! `BASTION_TEST_POSTGRES_URL` is set, a fresh PostgreSQL database.

use std::sync::Arc;

use bastion_store::Store;

pub async fn sqlite_store() -> Arc<dyn Store> {
    let dir = std::env::temp_dir().join(format!("bastion-store-{}", uuid::Uuid::new_v4()));
    bastion_store::open(&format!("sqlite://{}/s.db", dir.display())).await.unwrap()
}

pub async fn postgres_store() -> Option<Arc<dyn Store>> {
    let Ok(admin) = std::env::var("BASTION_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED: PostgreSQL half (BASTION_TEST_POSTGRES_URL not set)");
        return None;
    };
    let db = format!("bastion_it_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    Some(bastion_store::open(&format!("{base}/{db}")).await.unwrap())
}
