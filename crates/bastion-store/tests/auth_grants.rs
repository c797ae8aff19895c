//! Authorization grants (codes, pending requests, launches) on real SQLite and, when
//! `BASTION_TEST_POSTGRES_URL` is set, real PostgreSQL: used once, recognised when used
//! again, gone when expired, and never won twice by racing writers.

use std::sync::Arc;

use bastion_store::{Grant, GrantUse, Store};
use common::{postgres_store, sqlite_store};

mod common;

const NOW: i64 = 1_800_000_000;

fn grant(id: &str) -> Grant {
    Grant {
        id: id.into(),
        kind: "code",
        payload: format!("{{\"for\":\"{id}\"}}"),
        valid_until: NOW + 60,
        keep_until: NOW + 3600,
    }
}

async fn put(store: &dyn Store, g: &Grant) {
    let mut tx = store.begin().await.unwrap();
    tx.put_grant(g, NOW).await.unwrap();
    tx.commit().await.unwrap();
}

async fn use_once(store: &dyn Store, kind: &str, id: &str, now: i64) -> GrantUse {
    let mut tx = store.begin().await.unwrap();
    let r = tx.use_grant(kind, id, now).await.unwrap();
    tx.commit().await.unwrap();
    r
}

async fn check(store: Arc<dyn Store>) {
    let g = grant("a");
    put(&*store, &g).await;
    assert_eq!(store.peek_grant("code", "a", NOW).await.unwrap(), Some(g.payload.clone()), "peek sees it");
    assert_eq!(store.peek_grant("launch", "a", NOW).await.unwrap(), None, "another kind does not");
    assert_eq!(use_once(&*store, "code", "a", NOW).await, GrantUse::First(g.payload.clone()));
    assert_eq!(use_once(&*store, "code", "a", NOW + 1).await, GrantUse::Again(g.payload.clone()), "second use is told");
    assert_eq!(store.peek_grant("code", "a", NOW).await.unwrap(), None, "a used grant cannot be peeked");

    put(&*store, &grant("b")).await;
    assert_eq!(use_once(&*store, "code", "b", NOW + 61).await, GrantUse::Unknown, "expired is unknown");
    assert_eq!(use_once(&*store, "code", "nope", NOW).await, GrantUse::Unknown);

    // Racing uses: exactly one wins.
    put(&*store, &grant("c")).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { use_once(&*s, "code", "c", NOW).await })
        })
        .collect();
    let mut first = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), GrantUse::First(_)) {
            first += 1;
        }
    }
    assert_eq!(first, 1, "one racer wins the code");
}

#[tokio::test]
async fn grants_are_single_use_on_sqlite() {
    check(sqlite_store().await).await;
}

#[tokio::test]
async fn grants_are_single_use_on_postgres() {
    if let Some(s) = postgres_store().await {
        check(s).await;
    }
}
