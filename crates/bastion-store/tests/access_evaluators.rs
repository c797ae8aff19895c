//! Two evaluators, one definition: on random data and random access predicates, the SQL the
//! store compiles a predicate into selects exactly the rows that the in-memory evaluator
//! (`AccessPredicate::admits`) admits, with a matching total, on real SQLite and (when
//! `BASTION_TEST_POSTGRES_URL` is set) real PostgreSQL.
//!
//! The store re-checks every returned row in memory, so SQL that admits too much shows up in
//! the total (the count is SQL alone) and SQL that admits too little in the missing rows.
//! The facts the in-memory side needs beyond a row (who refers to a resource) come from the
//! test's own model of the data, not from the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use bastion_search::query::{SystemMatch, TokenValue};
use bastion_search::{AccessPredicate, AccessRow, SearchQuery};
use bastion_store::{Page, Store, interactions};
use common::{postgres_store, sqlite_store};
use proptest::prelude::*;
use serde_json::{Value, json};

mod common;

const PATIENTS: &[&str] = &["p0", "p1", "p2", "p3"];
const PRACTITIONERS: &[&str] = &["d0", "d1", "d2"];
const CATEGORIES: &[&str] = &["laboratory", "vital-signs", "imaging"];
const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const ORGS: &[&str] = &["Organization/x", "Organization/y"];
const ORG_TAG: &str = "urn:bastion:creating-organization";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const TYPES: &[&str] = &["Patient", "Practitioner", "Observation"];
/// The classes the index keeps for [`LABELS`] (see `bastion_fhir::labels::class_key`).
const CLASSES: &[&str] = &["conf:N", "conf:R", "conf:V", "sens:HIV", "sens:PSY", "unknown", "inert"];
const INSTANCES: &[(&str, &str)] =
    &[("Patient", "p0"), ("Patient", "p2"), ("Observation", "o1"), ("Observation", "o7"), ("Practitioner", "o1")];
const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
const LABELS: &[(Option<&str>, &str)] = &[
    (Some(CONFIDENTIALITY), "N"),
    (Some(CONFIDENTIALITY), "R"),
    (Some(CONFIDENTIALITY), "V"),
    (Some(ACT_CODE), "HIV"),
    (Some(ACT_CODE), "PSY"),
    (None, "R"),
    (Some("http://example.org/labels"), "secret"),
];

/// The data: patients, practitioners, and observations with a random subject, performer,
/// category, label and organization tag (a fixed seed, so a failure reproduces).
fn resources() -> Vec<Value> {
    let mut state: u64 = 0x5eed_ba57_10b5;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut out = Vec::new();
    for p in PATIENTS {
        out.push(json!({"resourceType": "Patient", "id": p}));
    }
    for d in PRACTITIONERS {
        out.push(json!({"resourceType": "Practitioner", "id": d}));
    }
    for i in 0..40 {
        let mut o = json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final", "code": {"text": "x"},
            "subject": {"reference": format!("Patient/{}", PATIENTS[next(PATIENTS.len())])}});
        if next(3) > 0 {
            o["performer"] =
                json!([{"reference": format!("Practitioner/{}", PRACTITIONERS[next(PRACTITIONERS.len())])}]);
        }
        if next(4) > 0 {
            o["category"] =
                json!([{"coding": [{"system": CATEGORY_SYSTEM, "code": CATEGORIES[next(CATEGORIES.len())]}]}]);
        }
        if next(3) > 0 {
            o["effectiveDateTime"] = json!(format!("2020-{:02}-15", 1 + next(12)));
        }
        let mut meta = serde_json::Map::new();
        if next(3) == 0 {
            meta.insert("security".into(), json!([{"system": ACT_CODE, "code": "PSY"}]));
        } else if next(2) == 0 {
            // One to three labels from a pool that holds confidentiality levels, a
            // sensitivity, a label without a system and one of an unknown system.
            let labels: Vec<Value> = (0..1 + next(3))
                .map(|_| {
                    let (system, code) = LABELS[next(LABELS.len())];
                    match system {
                        Some(s) => json!({"system": s, "code": code}),
                        None => json!({"code": code}),
                    }
                })
                .collect();
            meta.insert("security".into(), Value::Array(labels));
        }
        if next(3) > 0 {
            meta.insert("tag".into(), json!([{"system": ORG_TAG, "code": ORGS[next(ORGS.len())]}]));
        }
        if !meta.is_empty() {
            o["meta"] = Value::Object(meta);
        }
        out.push(o);
    }
    out
}

/// The model's answer to "which patients' records refer to this resource".
fn referrers(data: &[Value], resource_type: &str, id: &str) -> Vec<String> {
    let target = format!("{resource_type}/{id}");
    let mut out = BTreeSet::new();
    for o in data.iter().filter(|r| r["resourceType"] == "Observation") {
        if o["performer"][0]["reference"] == target.as_str() || o["subject"]["reference"] == target.as_str() {
            out.insert(o["subject"]["reference"].as_str().unwrap().trim_start_matches("Patient/").to_string());
        }
    }
    out.into_iter().collect()
}

fn subset(items: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(items, 0..=items.len()).prop_map(|v| v.into_iter().map(str::to_string).collect())
}

fn token(param: &str, system: &str, code: &str) -> AccessPredicate {
    AccessPredicate::Token {
        param: param.into(),
        values: vec![TokenValue { system: SystemMatch::Is(system.into()), code: Some(code.into()) }],
    }
}

fn predicate() -> impl Strategy<Value = AccessPredicate> {
    let leaf = prop_oneof![
        Just(AccessPredicate::AllowAll),
        Just(AccessPredicate::DenyAll),
        subset(PATIENTS).prop_map(AccessPredicate::PatientCompartment),
        subset(PATIENTS).prop_map(AccessPredicate::ReferencedFromCompartment),
        subset(TYPES).prop_map(AccessPredicate::ResourceType),
        subset(PATIENTS).prop_map(AccessPredicate::OutsideCompartments),
        proptest::sample::subsequence(INSTANCES, 0..=INSTANCES.len()).prop_map(|list| AccessPredicate::Instances(
            list.into_iter().map(|(t, id)| (t.to_string(), id.to_string())).collect()
        )),
        proptest::sample::select(CATEGORIES).prop_map(|c| token("category", CATEGORY_SYSTEM, c)),
        proptest::sample::select(CATEGORIES).prop_map(|c| AccessPredicate::Token {
            param: "category".into(),
            values: vec![TokenValue { system: SystemMatch::Any, code: Some(c.into()) }],
        }),
        proptest::sample::select(ORGS).prop_map(|o| token("_tag", ORG_TAG, o)),
        Just(token("_security", ACT_CODE, "PSY")),
        (0usize..13, 0usize..13).prop_map(|(a, b)| {
            let month =
                |m: usize| bastion_fhir::primitives::DateRange::parse(&format!("2020-{:02}", m.clamp(1, 12))).unwrap();
            AccessPredicate::DateOverlaps {
                param: "date".into(),
                low: (a > 0).then(|| month(a).low),
                high: (b > 0).then(|| month(b).high),
            }
        }),
        proptest::sample::subsequence(CLASSES, 0..=CLASSES.len()).prop_map(|allowed| AccessPredicate::TokenOtherThan {
            param: bastion_fhir::labels::LABEL_CLASS_PARAM.into(),
            values: allowed
                .into_iter()
                .map(|c| TokenValue { system: SystemMatch::Any, code: Some(c.into()) })
                .collect::<Vec<_>>()
                .into(),
        }),
        proptest::sample::subsequence(LABELS, 0..=LABELS.len()).prop_map(|allowed| AccessPredicate::TokenOtherThan {
            param: "_security".into(),
            values: allowed
                .into_iter()
                .map(|(system, code)| TokenValue {
                    system: system.map_or(SystemMatch::NoSystem, |s| SystemMatch::Is(s.into())),
                    code: Some(code.into()),
                })
                .collect::<Vec<_>>()
                .into(),
        }),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(AccessPredicate::All),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(AccessPredicate::Any),
            inner.prop_map(|p| AccessPredicate::Not(Box::new(p))),
        ]
    })
}

async fn load(store: &dyn Store, data: &[Value]) {
    let mut tx = store.begin().await.unwrap();
    for r in data {
        let (t, id) = (r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap());
        interactions::update(&mut *tx, t, id, r.clone(), None, bastion_store::Method::Put).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// What the in-memory evaluator admits of `resource_type`, over the stored rows.
async fn admitted_in_memory(
    store: &dyn Store,
    data: &[Value],
    p: &AccessPredicate,
    resource_type: &str,
) -> BTreeSet<String> {
    let all = SearchQuery { resource_type: resource_type.into(), ..SearchQuery::default() };
    let rows = store
        .search(&AccessPredicate::AllowAll, &all, Page { offset: 0, limit: 1000, with_total: false })
        .await
        .unwrap();
    rows.items
        .iter()
        .filter(|v| {
            let body: Value = serde_json::from_slice(v.body.as_deref().unwrap()).unwrap();
            let refs = referrers(data, &v.resource_type, &v.id);
            p.admits(&AccessRow {
                resource_type: &v.resource_type,
                id: &v.id,
                compartments: &v.compartments,
                resource: Some(&body),
                referrers: &refs,
            })
        })
        .map(|v| v.id.clone())
        .collect()
}

async fn agree(store: &dyn Store, data: &[Value], p: &AccessPredicate) -> Result<(), String> {
    for t in TYPES {
        let expected = admitted_in_memory(store, data, p, t).await;
        let q = SearchQuery { resource_type: t.to_string(), ..SearchQuery::default() };
        let page = store.search(p, &q, Page { offset: 0, limit: 1000, with_total: true }).await.unwrap();
        let by_sql: BTreeSet<String> = page.items.iter().map(|v| v.id.clone()).collect();
        if by_sql != expected || page.total != Some(expected.len() as u64) {
            return Err(format!(
                "{t} under {p:?}: SQL returned {by_sql:?} (total {:?}), memory admits {expected:?}",
                page.total
            ));
        }
        for id in expected.iter().take(3) {
            if store.read(p, t, id).await.unwrap().is_none() {
                return Err(format!("{t}/{id} under {p:?}: read refuses what memory admits"));
            }
        }
    }
    Ok(())
}

fn check(store: Arc<dyn Store>, rt: &tokio::runtime::Runtime) {
    let data = resources();
    rt.block_on(load(&*store, &data));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 192, ..ProptestConfig::default() });
    runner
        .run(&predicate(), |p| {
            rt.block_on(agree(&*store, &data, &p)).map_err(TestCaseError::fail)?;
            let simplified = p.clone().simplified();
            rt.block_on(agree(&*store, &data, &simplified)).map_err(|e| TestCaseError::fail(format!("simplified: {e}")))
        })
        .unwrap();
}

#[test]
fn sql_and_memory_evaluators_agree_on_sqlite() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(sqlite_store());
    check(store, &rt);
}

#[test]
fn sql_and_memory_evaluators_agree_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(store) = rt.block_on(postgres_store()) else { return };
    check(store, &rt);
}
