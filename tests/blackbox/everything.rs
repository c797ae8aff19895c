//! `GET [base]/Patient/[id]/$everything`: the patient's record (Patient, its compartment, and
//! what the record refers to outside it), paged, each type under the caller's access.

use crate::harness::*;
use crate::smart::{seed, smart_backends, smart_toml, tokens_for};

const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// ann: a laboratory result by dr-smith, a vital sign, a condition (plus the encounter of the
/// seed); bob: a result by dr-other.
async fn records(srv: &Server) {
    let dr = json!({"resourceType": "Practitioner", "id": "dr-other", "name": [{"family": "Other"}]});
    assert!(srv.put("Practitioner/dr-other", &dr).await.status().is_success());
    for (id, subject, category, performer) in [
        ("lab-ann", "ann", "laboratory", "dr-smith"),
        ("vital-ann", "ann", "vital-signs", "dr-smith"),
        ("lab-bob", "bob", "laboratory", "dr-other"),
    ] {
        let o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": id},
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "subject": {"reference": format!("Patient/{subject}")},
            "performer": [{"reference": format!("Practitioner/{performer}")}]});
        assert!(srv.put(&format!("Observation/{id}"), &o).await.status().is_success());
    }
    let c = json!({"resourceType": "Condition", "id": "asthma-ann", "subject": {"reference": "Patient/ann"}, "code": {"text": "asthma"}});
    assert!(srv.put("Condition/asthma-ann", &c).await.status().is_success());
}

async fn token(srv: &Server, scope: &str) -> String {
    records(srv).await;
    tokens_for(srv, scope, "ann").await["access_token"].as_str().unwrap().to_string()
}

async fn get(srv: &Server, token: &str, path: &str) -> reqwest::Response {
    srv.anonymous().get(srv.url(path)).bearer_auth(token).send().await.unwrap()
}

/// `(mode, Type/id)` of every entry, sorted.
fn entries(bundle: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| {
                    (
                        x["search"]["mode"].as_str().unwrap_or("").to_string(),
                        format!(
                            "{}/{}",
                            x["resource"]["resourceType"].as_str().unwrap(),
                            x["resource"]["id"].as_str().unwrap()
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn m(s: &str) -> (String, String) {
    ("match".into(), s.into())
}

fn inc(s: &str) -> (String, String) {
    ("include".into(), s.into())
}

smart_backends!(everything_returns_the_record_and_what_it_refers_to, |srv| {
    records(&srv).await;
    let b = body(srv.get("Patient/ann/$everything").await).await;
    assert_eq!(b["type"], "searchset");
    assert_eq!(
        entries(&b),
        vec![
            inc("Practitioner/dr-smith"),
            m("Condition/asthma-ann"),
            m("Encounter/enc-1"),
            m("Observation/lab-ann"),
            m("Observation/vital-ann"),
            m("Patient/ann"),
        ]
    );
    assert_eq!(b["total"], 5);
});

smart_backends!(everything_of_another_patient_under_a_patient_token_is_the_404_of_a_missing_one, |srv| {
    let t = token(&srv, "launch/patient patient/*.rs").await;
    assert_eq!(get(&srv, &t, "Patient/ann/$everything").await.status(), StatusCode::OK);
    let hidden = get(&srv, &t, "Patient/bob/$everything").await;
    let missing = get(&srv, &t, "Patient/nobody/$everything").await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let (h, m) = (body(hidden).await, body(missing).await);
    assert_eq!(h["issue"][0]["code"], m["issue"][0]["code"]);
    assert_eq!(
        h["issue"][0]["diagnostics"].as_str().map(|d| d.replace("bob", "?")),
        m["issue"][0]["diagnostics"].as_str().map(|d| d.replace("nobody", "?")),
        "the texts differ only by the id the caller gave"
    );
});

smart_backends!(everything_under_a_patient_token_lists_only_that_patients_record, |srv| {
    let t = token(&srv, "launch/patient patient/*.rs").await;
    let b = body(get(&srv, &t, "Patient/ann/$everything").await).await;
    let found = entries(&b);
    assert!(found.contains(&m("Observation/lab-ann")) && found.contains(&inc("Practitioner/dr-smith")));
    assert!(!found.iter().any(|(_, r)| r.contains("bob") || r.contains("dr-other")), "{found:?}");
});

smart_backends!(everything_applies_granular_scopes_type_by_type, |srv| {
    let t = token(
        &srv,
        &format!("launch/patient patient/Patient.rs patient/Observation.rs?category={CATEGORY}|laboratory"),
    )
    .await;
    let b = body(get(&srv, &t, "Patient/ann/$everything").await).await;
    assert_eq!(
        entries(&b),
        vec![m("Observation/lab-ann"), m("Patient/ann")],
        "no vital sign, no condition, no practitioner"
    );
    assert_eq!(b["total"], 2);
});

smart_backends!(everything_without_reading_the_patient_is_403, |srv| {
    let t = token(&srv, "launch/patient patient/Observation.rs").await;
    let r = get(&srv, &t, "Patient/ann/$everything").await;
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    assert_outcome(r, StatusCode::FORBIDDEN).await;
});

smart_backends!(everything_without_a_token_is_401, |srv| {
    records(&srv).await;
    assert_outcome(
        srv.anonymous().get(srv.url("Patient/ann/$everything")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
});

smart_backends!(everything_pages_with_links_bound_to_the_caller, |srv| {
    let t = token(&srv, "launch/patient patient/*.rs").await;
    let first = body(get(&srv, &t, "Patient/ann/$everything?_count=2").await).await;
    let next = first["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next.contains("/Patient/ann/$everything?"), "{next}");
    let path = next.split("/fhir/").nth(1).unwrap().to_string();
    let second = body(get(&srv, &t, &path).await).await;
    assert_eq!(second["total"], first["total"]);
    let mut seen: Vec<String> =
        entries(&first).into_iter().chain(entries(&second)).filter(|(m, _)| m == "match").map(|(_, r)| r).collect();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "no entry twice across pages");
    let other =
        tokens_for(&srv, "openid fhirUser user/*.rs", "dr-smith").await["access_token"].as_str().unwrap().to_string();
    assert_outcome(get(&srv, &other, &path).await, StatusCode::BAD_REQUEST).await;
});

smart_backends!(everything_with_a_type_outside_the_compartment_is_400, |srv| {
    records(&srv).await;
    assert_outcome(srv.get("Patient/ann/$everything?_type=Practitioner").await, StatusCode::BAD_REQUEST).await;
    let b = body(srv.get("Patient/ann/$everything?_type=Condition").await).await;
    assert_eq!(entries(&b), vec![m("Condition/asthma-ann")]);
});

smart_backends!(everything_since_lists_only_what_changed, |srv| {
    records(&srv).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let since = body(srv.get("Patient/ann").await).await["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let mut c = body(srv.get("Condition/asthma-ann").await).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c["clinicalStatus"] =
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]});
    assert!(srv.put("Condition/asthma-ann", &c).await.status().is_success());
    let later = body(srv.get("Condition/asthma-ann").await).await["meta"]["lastUpdated"].as_str().unwrap().to_string();
    assert!(later > since);
    let b = body(srv.get(&format!("Patient/ann/$everything?_since={}", later.replace('+', "%2B"))).await).await;
    assert_eq!(entries(&b), vec![m("Condition/asthma-ann")], "{since} {later}");
});
