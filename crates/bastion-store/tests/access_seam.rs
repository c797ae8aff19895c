//! The access-predicate seam, on real SQLite and (when `BASTION_TEST_POSTGRES_URL` is set)
//! real PostgreSQL: every read path honours the predicate inside its SQL.

use std::sync::Arc;

use bastion_search::{AccessPredicate, SearchQuery};
use bastion_store::{HistoryLevel, HistoryQuery, Page, Store, interactions};
use common::{postgres_store, sqlite_store};

mod common;
use serde_json::json;

/// Two patients, each with an observation; one observation merely *focuses* on p1.
async fn seed(store: &dyn Store) {
    let mut tx = store.begin().await.unwrap();
    for p in ["p1", "p2"] {
        interactions::update(
            &mut *tx,
            "Patient",
            p,
            json!({"resourceType": "Patient", "id": p}),
            None,
            bastion_store::Method::Put,
        )
        .await
        .unwrap();
        let mut obs = json!({"resourceType": "Observation", "id": format!("o-{p}"), "status": "final", "code": {"text": "x"},
            "subject": {"reference": format!("Patient/{p}")}});
        if p == "p1" {
            // visible to p1, pointing (not as compartment membership) at hidden p2
            obs["focus"] = json!([{"reference": "Patient/p2"}]);
        }
        interactions::update(&mut *tx, "Observation", &format!("o-{p}"), obs, None, bastion_store::Method::Put)
            .await
            .unwrap();
    }
    let focus = json!({"resourceType": "Observation", "id": "o-focus", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/p2"}, "focus": [{"reference": "Patient/p1"}]});
    interactions::update(&mut *tx, "Observation", "o-focus", focus, None, bastion_store::Method::Put).await.unwrap();
    tx.commit().await.unwrap();
}

async fn check_seam(store: Arc<dyn Store>) {
    seed(&*store).await;
    let p1 = AccessPredicate::PatientCompartment(vec!["p1".into()]);
    // read
    assert!(store.read(&p1, "Observation", "o-p1").await.unwrap().is_some());
    assert!(store.read(&p1, "Observation", "o-p2").await.unwrap().is_none());
    assert!(store.read(&p1, "Observation", "o-focus").await.unwrap().is_none(), "focus is not compartment membership");
    assert!(store.read(&p1, "Patient", "p1").await.unwrap().is_some());
    assert!(store.read(&p1, "Patient", "p2").await.unwrap().is_none());
    // vread
    assert!(store.vread(&p1, "Observation", "o-p2", 1).await.unwrap().is_none());
    assert!(store.vread(&p1, "Observation", "o-p1", 1).await.unwrap().is_some());
    // search, with a matching total
    let all = SearchQuery { resource_type: "Observation".into(), ..SearchQuery::default() };
    let page = store.search(&p1, &all, Page { offset: 0, limit: 10, with_total: true }).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.total, Some(1));
    let page =
        store.search(&AccessPredicate::AllowAll, &all, Page { offset: 0, limit: 10, with_total: true }).await.unwrap();
    assert_eq!(page.total, Some(3));
    let none =
        store.search(&AccessPredicate::DenyAll, &all, Page { offset: 0, limit: 10, with_total: true }).await.unwrap();
    assert_eq!(none.total, Some(0));
    // a chain does not reach through a resource outside the predicate
    let chained = SearchQuery::parse("Observation", &[("subject:Patient._id".into(), "p2".into())]).unwrap();
    let page = store.search(&p1, &chained, Page { offset: 0, limit: 10, with_total: true }).await.unwrap();
    assert_eq!(page.total, Some(0));
    let patients_by_obs =
        SearchQuery::parse("Patient", &[("_has:Observation:subject:_id".into(), "o-p2".into())]).unwrap();
    let page = store
        .search(
            &AccessPredicate::PatientCompartment(vec!["p2".into()]),
            &patients_by_obs,
            Page { offset: 0, limit: 10, with_total: true },
        )
        .await
        .unwrap();
    assert_eq!(page.total, Some(1));
    let page = store.search(&p1, &patients_by_obs, Page { offset: 0, limit: 10, with_total: true }).await.unwrap();
    assert_eq!(page.total, Some(0), "_has does not reach through a hidden resource");
    // The same, with the chain or _has as the clause that selects the candidates and as one
    // that only tests them (another clause drives): the inner rows are access-checked in both.
    let count = |q: &[(&str, &str)]| {
        let q = SearchQuery::parse(
            if q[0].0.starts_with("_has") || q.iter().any(|(k, _)| k.starts_with("_has")) {
                "Patient"
            } else {
                "Observation"
            },
            &q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>(),
        )
        .unwrap();
        let store = store.clone();
        let p1 = p1.clone();
        async move {
            let hidden = store.search(&p1, &q, Page { offset: 0, limit: 10, with_total: true }).await.unwrap().total;
            let all = store
                .search(&AccessPredicate::AllowAll, &q, Page { offset: 0, limit: 10, with_total: true })
                .await
                .unwrap()
                .total;
            (hidden, all)
        }
    };
    assert_eq!(count(&[("focus:Patient._id", "p2")]).await, (Some(0), Some(1)), "chain as driver");
    assert_eq!(count(&[("_id", "o-p1"), ("focus:Patient._id", "p2")]).await, (Some(0), Some(1)), "chain as test");
    assert_eq!(count(&[("_has:Observation:focus:_id", "o-focus")]).await, (Some(0), Some(1)), "_has as driver");
    assert_eq!(
        count(&[("_id", "p1"), ("_has:Observation:focus:_id", "o-focus")]).await,
        (Some(0), Some(1)),
        "_has as test"
    );
    // history at every level
    for level in [HistoryLevel::System, HistoryLevel::Type { resource_type: "Observation".into() }] {
        let h = store
            .history(&p1, &HistoryQuery { level, since: None, before_seq: None, max_seq: None, limit: 100 })
            .await
            .unwrap();
        assert!(
            h.iter()
                .all(|v| v.compartments.contains(&"p1".to_string()) || (v.resource_type == "Patient" && v.id == "p1"))
        );
        assert!(!h.is_empty());
    }
    // conditional matching inside a transaction
    let mut tx = store.begin().await.unwrap();
    let ids = tx.find_ids(&p1, &all, 10).await.unwrap();
    assert_eq!(ids, vec!["o-p1".to_string()]);
    // a delete tombstone stays in the compartment of what it deleted
    interactions::delete(&mut *tx, "Observation", "o-p1", None).await.unwrap();
    tx.commit().await.unwrap();
    let tomb = store.read(&p1, "Observation", "o-p1").await.unwrap().unwrap();
    assert!(tomb.is_deleted());
    let other = AccessPredicate::PatientCompartment(vec!["p2".into()]);
    assert!(store.read(&other, "Observation", "o-p1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_predicate_is_enforced_on_every_read_path_sqlite() {
    check_seam(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_predicate_is_enforced_on_every_read_path_postgres() {
    if let Some(store) = postgres_store().await {
        check_seam(store).await;
    }
}
