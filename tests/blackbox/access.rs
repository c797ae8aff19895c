//! Access control on the FHIR API from the granted scopes: `patient/` tokens confined to the
//! patient's compartment, types and interactions not granted refused with 403 before any data
//! is touched, hidden instances answered like missing ones. One test per attack.
//!
//! Granular scopes (`patient/Observation.rs?category=...`) narrow a permission to what matches
//! their filter, on every path. Attribute rules have their own module (`rules.rs`).

use crate::backends_from;
use crate::harness::*;
use crate::smart::{seed, smart_backends, smart_toml, tokens_for};

/// Observations: one of ann's (focus: bob), one of bob's, one of bob's that focuses on ann.
async fn observations(srv: &Server) {
    for (id, subject, focus) in
        [("obs-ann", "ann", Some("bob")), ("obs-bob", "bob", None), ("obs-bob-about-ann", "bob", Some("ann"))]
    {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "weight"},
            "subject": {"reference": format!("Patient/{subject}")}});
        if let Some(f) = focus {
            o["focus"] = json!([{"reference": format!("Patient/{f}")}]);
        }
        assert!(srv.put(&format!("Observation/{id}"), &o).await.status().is_success());
    }
}

async fn token(srv: &Server, scope: &str) -> String {
    observations(srv).await;
    tokens_for(srv, scope, "ann").await["access_token"].as_str().unwrap().to_string()
}

async fn get(srv: &Server, token: &str, path: &str) -> reqwest::Response {
    srv.anonymous().get(srv.url(path)).bearer_auth(token).send().await.unwrap()
}

fn ids(bundle: &Value) -> Vec<String> {
    entry_refs(bundle)
}

const ANN: &str = "launch/patient patient/*.rs";

smart_backends!(patient_token_reading_another_patient_gets_the_404_of_a_missing_one, |srv| {
    let t = token(&srv, ANN).await;
    assert_eq!(get(&srv, &t, "Patient/ann").await.status(), StatusCode::OK);
    let hidden = get(&srv, &t, "Patient/bob").await;
    let missing = get(&srv, &t, "Patient/nobody").await;
    assert_eq!(hidden.headers().get("content-type"), missing.headers().get("content-type"));
    let (h, m) =
        (assert_outcome(hidden, StatusCode::NOT_FOUND).await, assert_outcome(missing, StatusCode::NOT_FOUND).await);
    assert_eq!(h["issue"][0]["code"], m["issue"][0]["code"]);
    assert_eq!(
        h["issue"][0]["diagnostics"].as_str().unwrap().replace("bob", "X"),
        m["issue"][0]["diagnostics"].as_str().unwrap().replace("nobody", "X")
    );
    assert_eq!(get(&srv, &t, "Observation/obs-bob").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&srv, &t, "Observation/obs-bob/_history/1").await.status(), StatusCode::NOT_FOUND);
});

smart_backends!(patient_token_search_sees_only_its_own_compartment, |srv| {
    let t = token(&srv, ANN).await;
    let b = body(get(&srv, &t, "Observation").await).await;
    assert_eq!(ids(&b), vec!["Observation/obs-ann"]);
    assert_eq!(b["total"], 1, "total counts only what the caller may see");
    let b = body(get(&srv, &t, "Observation?patient=bob").await).await;
    assert_eq!(b["total"], 0);
    let b = body(get(&srv, &t, "Patient").await).await;
    assert_eq!(ids(&b), vec!["Patient/ann"]);
    let b = body(get(&srv, &t, "Patient/bob/Observation").await).await;
    assert_eq!(b["total"], 0, "another patient's compartment search finds nothing");
});

smart_backends!(patient_token_revinclude_does_not_reach_outside_the_compartment, |srv| {
    let t = token(&srv, ANN).await;
    let b = body(get(&srv, &t, "Patient?_id=ann&_revinclude=Observation:focus").await).await;
    assert_eq!(ids(&b), vec!["Patient/ann"], "bob's Observation about ann is not ann's to read");
});

smart_backends!(patient_token_include_does_not_reach_another_patient, |srv| {
    let t = token(&srv, ANN).await;
    let b = body(get(&srv, &t, "Observation?_id=obs-ann&_include=Observation:focus").await).await;
    assert_eq!(ids(&b), vec!["Observation/obs-ann"]);
});

smart_backends!(patient_token_history_does_not_reach_another_patient, |srv| {
    let t = token(&srv, ANN).await;
    let b = body(get(&srv, &t, "Observation/_history").await).await;
    assert!(ids(&b).iter().all(|i| i == "Observation/obs-ann"), "{:?}", ids(&b));
    let r = get(&srv, &t, "Patient/bob/_history").await;
    if r.status() == StatusCode::OK {
        assert!(ids(&body(r).await).is_empty());
    } else {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
});

smart_backends!(type_not_granted_is_403_before_any_data, |srv| {
    let t = token(&srv, "launch/patient patient/Patient.rs").await;
    for path in ["Observation", "Observation/obs-ann", "Observation/does-not-exist", "Observation/_history"] {
        let r = get(&srv, &t, path).await;
        let www = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let oo = assert_outcome(r, StatusCode::FORBIDDEN).await;
        assert!(www.contains("insufficient_scope"), "{path}: {www}");
        assert_eq!(oo["issue"][0]["code"], "forbidden");
    }
});

smart_backends!(write_not_granted_is_403_and_writes_nothing, |srv| {
    let t = token(&srv, ANN).await;
    let o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/ann"}});
    let r = srv.send_as(&t, "POST", "Observation", Some(o)).await;
    assert_outcome(r, StatusCode::FORBIDDEN).await;
    let r = srv.anonymous().delete(srv.url("Observation/obs-ann")).bearer_auth(&t).send().await.unwrap();
    assert_outcome(r, StatusCode::FORBIDDEN).await;
    assert_eq!(body(srv.get("Observation").await).await["total"], 3, "nothing was written or deleted");
});

smart_backends!(backend_with_a_narrow_system_scope_reaches_only_its_types, |srv| {
    observations(&srv).await;
    let t = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/Patient.rs").await;
    assert_eq!(body(get(&srv, &t, "Patient").await).await["total"], 2);
    assert_outcome(get(&srv, &t, "Observation").await, StatusCode::FORBIDDEN).await;
    assert_outcome(get(&srv, &t, "Observation/obs-ann").await, StatusCode::FORBIDDEN).await;
});

smart_backends!(backend_with_a_narrow_system_scope_cannot_change_or_infer_other_types, |srv| {
    observations(&srv).await;
    let t = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/Patient.rs").await;
    let ann = json!({"resourceType": "Patient", "id": "ann", "name": [{"family": "Changed"}]});
    assert_outcome(srv.send_as(&t, "PUT", "Patient/ann", Some(ann)).await, StatusCode::FORBIDDEN).await;
    assert_outcome(srv.send_as(&t, "POST", "Observation", Some(obs(None, "ann"))).await, StatusCode::FORBIDDEN).await;
    assert_outcome(srv.send_as(&t, "DELETE", "Patient/bob", None).await, StatusCode::FORBIDDEN).await;
    let infer = get(&srv, &t, "Patient?_has:Observation:subject:code:text=weight").await;
    assert_outcome(infer, StatusCode::FORBIDDEN).await;
    assert_outcome(get(&srv, &t, "_history").await, StatusCode::FORBIDDEN).await;
    assert_eq!(body(srv.get("Patient/ann").await).await["name"][0]["family"], "Anders", "nothing changed");
    assert_eq!(srv.get("Patient/bob").await.status(), StatusCode::OK);
});

smart_backends!(patient_token_system_history_reaches_only_its_compartment, |srv| {
    let t = token(&srv, ANN).await;
    let b = body(get(&srv, &t, "_history").await).await;
    let mut found = ids(&b);
    found.sort();
    found.dedup();
    assert!(
        found.contains(&"Observation/obs-ann".to_string()) && found.contains(&"Patient/ann".to_string()),
        "{found:?}"
    );
    assert!(!found.iter().any(|r| r.contains("bob") || r.contains("dr-smith")), "{found:?}");
});

smart_backends!(audit_event_needs_a_scope_that_names_it, |srv| {
    let t = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/*.rs").await;
    assert_outcome(get(&srv, &t, "AuditEvent").await, StatusCode::FORBIDDEN).await;
});

smart_backends!(batch_entries_are_authorized_one_by_one, |srv| {
    let t = token(&srv, ANN).await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/ann"}},
        {"request": {"method": "GET", "url": "Patient/bob"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/ann"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let r = srv
        .anonymous()
        .post(srv.url(""))
        .bearer_auth(&t)
        .header("Content-Type", "application/fhir+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    let b = body(r).await;
    let status = |i: usize| b["entry"][i]["response"]["status"].as_str().unwrap().to_string();
    assert!(status(0).starts_with("200"), "{b}");
    assert!(status(1).starts_with("404"), "{b}");
    assert!(status(2).starts_with("403"), "{b}");
    assert_eq!(body(srv.get("Observation").await).await["total"], 3);
});

smart_backends!(system_search_needs_search_on_every_type, |srv| {
    let narrow = token(&srv, "launch/patient patient/Patient.rs").await;
    assert_outcome(get(&srv, &narrow, "?_type=Patient").await, StatusCode::FORBIDDEN).await;
    let wide = tokens_for(&srv, ANN, "ann").await["access_token"].as_str().unwrap().to_string();
    let b = body(get(&srv, &wide, "?_type=Patient,Observation").await).await;
    let mut found = ids(&b);
    found.sort();
    assert_eq!(found, vec!["Observation/obs-ann", "Patient/ann"]);
});

const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// ann's laboratory result and vital sign, besides the weight observations.
async fn categorised(srv: &Server) {
    for (id, category) in [("lab-ann", "laboratory"), ("vital-ann", "vital-signs"), ("lab-bob", "laboratory")] {
        let subject = if id.ends_with("bob") { "bob" } else { "ann" };
        let o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": id},
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "subject": {"reference": format!("Patient/{subject}")}});
        assert!(srv.put(&format!("Observation/{id}"), &o).await.status().is_success());
    }
}

fn lab_scope(actions: &str) -> String {
    format!("launch/patient patient/Observation.{actions}?category={CATEGORY}|laboratory patient/Patient.rs")
}

smart_backends!(granular_scope_search_returns_only_matching_records, |srv| {
    let t = token(&srv, &lab_scope("rs")).await;
    categorised(&srv).await;
    let b = body(get(&srv, &t, "Observation").await).await;
    assert_eq!(ids(&b), vec!["Observation/lab-ann"], "not the vital sign, not bob's result");
    assert_eq!(b["total"], 1);
    let b = body(get(&srv, &t, "Observation?category=vital-signs").await).await;
    assert_eq!(b["total"], 0, "asking for another category finds nothing");
});

smart_backends!(granular_scope_read_of_a_non_matching_record_is_the_404_of_a_missing_one, |srv| {
    let t = token(&srv, &lab_scope("rs")).await;
    categorised(&srv).await;
    assert_eq!(get(&srv, &t, "Observation/lab-ann").await.status(), StatusCode::OK);
    let hidden = body(get(&srv, &t, "Observation/vital-ann").await).await;
    let missing = body(get(&srv, &t, "Observation/no-such").await).await;
    assert_eq!(hidden["issue"][0]["code"], missing["issue"][0]["code"]);
    assert_outcome(get(&srv, &t, "Observation/obs-ann").await, StatusCode::NOT_FOUND).await;
});

smart_backends!(granular_scope_revinclude_reaches_only_matching_records, |srv| {
    let t = token(&srv, &lab_scope("rs")).await;
    categorised(&srv).await;
    let b = body(get(&srv, &t, "Patient?_revinclude=Observation:subject").await).await;
    let mut found = ids(&b);
    found.sort();
    assert_eq!(found, vec!["Observation/lab-ann", "Patient/ann"]);
});

smart_backends!(granular_scope_history_shows_only_versions_that_match, |srv| {
    let t = token(&srv, &lab_scope("rs")).await;
    categorised(&srv).await;
    // vital-ann becomes a laboratory result: its first version stays out of reach.
    let mut o = body(srv.get("Observation/vital-ann").await).await;
    o["category"][0]["coding"][0]["code"] = json!("laboratory");
    assert!(srv.put("Observation/vital-ann", &o).await.status().is_success());
    let b = body(get(&srv, &t, "Observation/vital-ann/_history").await).await;
    let versions: Vec<&str> =
        b["entry"].as_array().unwrap().iter().map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap()).collect();
    assert_eq!(versions, vec!["2"]);
    assert_outcome(get(&srv, &t, "Observation/vital-ann/_history/1").await, StatusCode::NOT_FOUND).await;
});

smart_backends!(granular_scope_cannot_create_outside_its_filter, |srv| {
    observations(&srv).await;
    let t = tokens_for(&srv, &lab_scope("crs"), "dr-smith").await["access_token"].as_str().unwrap().to_string();
    let mut o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}], "subject": {"reference": "Patient/ann"}});
    assert_outcome(srv.send_as(&t, "POST", "Observation", Some(o.clone())).await, StatusCode::FORBIDDEN).await;
    o["category"][0]["coding"][0]["code"] = json!("laboratory");
    assert_eq!(srv.send_as(&t, "POST", "Observation", Some(o)).await.status(), StatusCode::CREATED);
});

smart_backends!(granular_scope_update_cannot_move_a_record_out_of_its_filter, |srv| {
    observations(&srv).await;
    categorised(&srv).await;
    let t = tokens_for(&srv, &lab_scope("rus"), "dr-smith").await["access_token"].as_str().unwrap().to_string();
    let mut o = body(srv.get("Observation/lab-ann").await).await;
    o["category"][0]["coding"][0]["code"] = json!("vital-signs");
    let r = srv.send_as(&t, "PUT", "Observation/lab-ann", Some(o)).await;
    assert_outcome(r, StatusCode::FORBIDDEN).await;
    let stored = body(srv.get("Observation/lab-ann").await).await;
    assert_eq!(stored["category"][0]["coding"][0]["code"], "laboratory", "nothing changed");
    let mut v = body(srv.get("Observation/vital-ann").await).await;
    v["status"] = json!("amended");
    let r = srv.send_as(&t, "PUT", "Observation/vital-ann", Some(v)).await;
    assert_outcome(r, StatusCode::NOT_FOUND).await;
});

smart_backends!(granular_scope_has_does_not_match_through_records_outside_the_filter, |srv| {
    let t = token(&srv, &lab_scope("rs")).await;
    categorised(&srv).await;
    let lab = body(get(&srv, &t, "Patient?_has:Observation:subject:code:text=lab-ann").await).await;
    assert_eq!(lab["total"], 1);
    let vital = body(get(&srv, &t, "Patient?_has:Observation:subject:code:text=vital-ann").await).await;
    assert_eq!(vital["total"], 0, "the vital sign exists but is outside the scope's filter");
});

smart_backends!(granular_scope_with_a_filter_that_cannot_be_enforced_is_403, |srv| {
    let t = token(&srv, "launch/patient patient/Observation.rs?date=gt2020-01-01").await;
    assert_outcome(get(&srv, &t, "Observation").await, StatusCode::FORBIDDEN).await;
});

// ---- types outside the Patient compartment under a patient/ scope ------------------------

/// ann's Observation names dr-smith; bob's names dr-other; dr-lonely is named by nobody.
async fn practitioners(srv: &Server) {
    for (id, family) in [("dr-other", "Other"), ("dr-lonely", "Lonely")] {
        let p = json!({"resourceType": "Practitioner", "id": id, "name": [{"family": family}]});
        assert!(srv.put(&format!("Practitioner/{id}"), &p).await.status().is_success());
    }
    for (id, subject, performer) in [("seen-ann", "ann", "dr-smith"), ("seen-bob", "bob", "dr-other")] {
        let o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "visit"},
            "subject": {"reference": format!("Patient/{subject}")},
            "performer": [{"reference": format!("Practitioner/{performer}")}]});
        assert!(srv.put(&format!("Observation/{id}"), &o).await.status().is_success());
    }
}

smart_backends!(patient_token_reads_a_practitioner_its_record_refers_to_and_no_other, |srv| {
    let t = token(&srv, ANN).await;
    practitioners(&srv).await;
    assert_eq!(get(&srv, &t, "Practitioner/dr-smith").await.status(), StatusCode::OK);
    let other = body(get(&srv, &t, "Practitioner/dr-other").await).await;
    let lonely = body(get(&srv, &t, "Practitioner/dr-lonely").await).await;
    let missing = body(get(&srv, &t, "Practitioner/nobody").await).await;
    assert_eq!(
        other["issue"][0]["code"], missing["issue"][0]["code"],
        "another patient's practitioner reads as missing"
    );
    assert_eq!(lonely["issue"][0]["code"], missing["issue"][0]["code"]);
    let b = body(get(&srv, &t, "Practitioner").await).await;
    assert_eq!(ids(&b), vec!["Practitioner/dr-smith"]);
    assert_eq!(b["total"], 1);
});

smart_backends!(patient_token_include_reaches_the_referenced_practitioner_only, |srv| {
    let t = token(&srv, ANN).await;
    practitioners(&srv).await;
    let b = body(get(&srv, &t, "Observation?_include=Observation:performer").await).await;
    let mut found = ids(&b);
    found.sort();
    assert_eq!(found, vec!["Observation/obs-ann", "Observation/seen-ann", "Practitioner/dr-smith"]);
});

smart_backends!(patient_token_chain_does_not_match_through_another_patients_practitioner, |srv| {
    let t = token(&srv, ANN).await;
    practitioners(&srv).await;
    assert_eq!(body(get(&srv, &t, "Observation?performer.name=Smith").await).await["total"], 1);
    assert_eq!(body(get(&srv, &t, "Observation?performer.name=Other").await).await["total"], 0);
    let b = body(get(&srv, &t, "Practitioner?_has:Observation:performer:subject=Patient/bob").await).await;
    assert_eq!(b["total"], 0, "_has over bob's record is no oracle");
});

smart_backends!(referenced_practitioner_is_no_longer_readable_once_the_reference_is_gone, |srv| {
    let t = token(&srv, ANN).await;
    practitioners(&srv).await;
    assert_eq!(get(&srv, &t, "Practitioner/dr-smith").await.status(), StatusCode::OK);
    let mut o = body(srv.get("Observation/seen-ann").await).await;
    o["performer"] = json!([{"reference": "Practitioner/dr-lonely"}]);
    assert!(srv.put("Observation/seen-ann", &o).await.status().is_success());
    assert_outcome(get(&srv, &t, "Practitioner/dr-smith").await, StatusCode::NOT_FOUND).await;
    assert_eq!(get(&srv, &t, "Practitioner/dr-lonely").await.status(), StatusCode::OK);
});

smart_backends!(patient_scoped_write_to_a_type_outside_the_compartment_is_403, |srv| {
    let t = writer(&srv).await;
    practitioners(&srv).await;
    let changed = json!({"resourceType": "Practitioner", "id": "dr-smith", "name": [{"family": "Changed"}]});
    assert_outcome(srv.send_as(&t, "PUT", "Practitioner/dr-smith", Some(changed)).await, StatusCode::FORBIDDEN).await;
    let new = json!({"resourceType": "Organization", "name": "Made up"});
    assert_outcome(srv.send_as(&t, "POST", "Organization", Some(new)).await, StatusCode::FORBIDDEN).await;
    assert_eq!(body(srv.get("Practitioner/dr-smith").await).await["name"][0]["family"], "Smith");
});

// ---- writes under a patient/ scope ---------------------------------------------------------

/// dr-smith in ann's context with patient-level write scopes.
async fn writer(srv: &Server) -> String {
    observations(srv).await;
    let t = tokens_for(srv, "launch/patient patient/*.cruds", "dr-smith").await;
    assert_eq!(t["patient"], "ann", "the chooser's first patient");
    t["access_token"].as_str().unwrap().to_string()
}

fn obs(id: Option<&str>, subject: &str) -> Value {
    let mut o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": format!("Patient/{subject}")}});
    if let Some(id) = id {
        o["id"] = json!(id);
    }
    o
}

async fn subject_of(srv: &Server, id: &str) -> String {
    body(srv.get(&format!("Observation/{id}")).await).await["subject"]["reference"].as_str().unwrap_or("").to_string()
}

smart_backends!(patient_scoped_create_about_another_patient_is_403, |srv| {
    let t = writer(&srv).await;
    assert_outcome(srv.send_as(&t, "POST", "Observation", Some(obs(None, "bob"))).await, StatusCode::FORBIDDEN).await;
    assert_eq!(srv.send_as(&t, "POST", "Observation", Some(obs(None, "ann"))).await.status(), StatusCode::CREATED);
    assert_eq!(body(srv.get("Observation?subject=Patient/bob").await).await["total"], 2, "nothing new about bob");
});

smart_backends!(patient_scoped_create_pointing_at_a_hidden_record_is_refused_like_a_dangling_one, |srv| {
    let t = writer(&srv).await;
    let with_member = |target: &str| {
        let mut o = obs(None, "ann");
        o["hasMember"] = json!([{"reference": target}]);
        o
    };
    let hidden = srv.send_as(&t, "POST", "Observation", Some(with_member("Observation/obs-bob"))).await;
    let dangling = srv.send_as(&t, "POST", "Observation", Some(with_member("Observation/no-such"))).await;
    assert_eq!(hidden.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(dangling.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (h, d) = (body(hidden).await, body(dangling).await);
    assert_eq!(h["issue"][0]["code"], d["issue"][0]["code"]);
    assert_eq!(
        h["issue"][0]["diagnostics"].as_str().unwrap().replace("obs-bob", "?"),
        d["issue"][0]["diagnostics"].as_str().unwrap().replace("no-such", "?"),
        "the answers differ only by the id the caller gave"
    );
    let versioned = srv.send_as(&t, "POST", "Observation", Some(with_member("Observation/obs-bob/_history/1"))).await;
    assert_outcome(versioned, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body(srv.get("Observation?has-member=Observation/obs-bob").await).await["total"], 0, "nothing written");
    let ok = srv.send_as(&t, "POST", "Observation", Some(with_member("Observation/obs-ann"))).await;
    assert_eq!(ok.status(), StatusCode::CREATED, "a visible target is fine");
});

smart_backends!(caller_that_sees_a_whole_type_may_keep_a_dangling_reference_to_it, |srv| {
    observations(&srv).await;
    let t = tokens_for(&srv, "openid fhirUser user/*.cruds", "dr-smith").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut o = obs(None, "ann");
    o["hasMember"] = json!([{"reference": "Observation/not-yet-loaded"}]);
    assert_eq!(
        srv.send_as(&t, "POST", "Observation", Some(o)).await.status(),
        StatusCode::CREATED,
        "nothing can be hidden from it"
    );
});

smart_backends!(patient_scoped_update_pointing_at_a_hidden_record_is_refused, |srv| {
    let t = writer(&srv).await;
    let mut o = obs(Some("obs-ann"), "ann");
    o["focus"] = json!([{"reference": "Patient/bob"}]);
    assert_outcome(srv.send_as(&t, "PUT", "Observation/obs-ann", Some(o)).await, StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    let patch = json!([{"op": "add", "path": "/derivedFrom", "value": [{"reference": "Observation/obs-bob"}]}]);
    assert_outcome(
        srv.send_as(&t, "PATCH", "Observation/obs-ann", Some(patch)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body(srv.get("Observation/obs-ann").await).await["meta"]["versionId"], "1");
});

smart_backends!(patient_scoped_transaction_may_point_at_its_own_new_entries, |srv| {
    let t = writer(&srv).await;
    let mut first = obs(None, "ann");
    first["hasMember"] = json!([{"reference": "urn:uuid:4c3e3b4e-0000-4000-8000-000000000002"}]);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:4c3e3b4e-0000-4000-8000-000000000001", "resource": first, "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:4c3e3b4e-0000-4000-8000-000000000002", "resource": obs(None, "ann"), "request": {"method": "POST", "url": "Observation"}}
    ]});
    let r = srv.send_as(&t, "POST", "", Some(bundle.clone())).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", body(r).await);
    let mut bad = bundle;
    bad["entry"][1]["resource"]["hasMember"] = json!([{"reference": "Observation/obs-bob"}]);
    let r = srv.send_as(&t, "POST", "", Some(bad)).await;
    assert_outcome(r, StatusCode::UNPROCESSABLE_ENTITY).await;
});

smart_backends!(patient_scoped_create_of_a_new_patient_is_403, |srv| {
    let t = writer(&srv).await;
    let p = json!({"resourceType": "Patient", "name": [{"family": "Other"}]});
    assert_outcome(srv.send_as(&t, "POST", "Patient", Some(p)).await, StatusCode::FORBIDDEN).await;
});

smart_backends!(patient_scoped_update_cannot_move_a_record_to_another_patient, |srv| {
    let t = writer(&srv).await;
    let r = srv.send_as(&t, "PUT", "Observation/obs-ann", Some(obs(Some("obs-ann"), "bob"))).await;
    assert_outcome(r, StatusCode::FORBIDDEN).await;
    assert_eq!(subject_of(&srv, "obs-ann").await, "Patient/ann");
});

smart_backends!(patient_scoped_update_of_a_hidden_record_is_404, |srv| {
    let t = writer(&srv).await;
    let r = srv.send_as(&t, "PUT", "Observation/obs-bob", Some(obs(Some("obs-bob"), "ann"))).await;
    assert_outcome(r, StatusCode::NOT_FOUND).await;
    assert_eq!(subject_of(&srv, "obs-bob").await, "Patient/bob", "not taken over");
});

smart_backends!(patient_scoped_patch_of_a_hidden_record_is_404, |srv| {
    let t = writer(&srv).await;
    let patch = json!([{"op": "replace", "path": "/status", "value": "amended"}]);
    assert_outcome(srv.send_as(&t, "PATCH", "Observation/obs-bob", Some(patch)).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body(srv.get("Observation/obs-bob").await).await["status"], "final");
});

smart_backends!(patient_scoped_delete_of_a_hidden_record_is_404, |srv| {
    let t = writer(&srv).await;
    assert_outcome(srv.send_as(&t, "DELETE", "Observation/obs-bob", None).await, StatusCode::NOT_FOUND).await;
    assert_eq!(srv.get("Observation/obs-bob").await.status(), StatusCode::OK, "still there");
});

smart_backends!(patient_scoped_conditional_update_matches_only_visible_records, |srv| {
    let t = writer(&srv).await;
    let r = srv.send_as(&t, "PUT", "Observation?_id=obs-bob", Some(obs(None, "ann"))).await;
    assert_eq!(r.status(), StatusCode::CREATED, "the hidden match is not seen: a new record is made");
    assert_eq!(subject_of(&srv, "obs-bob").await, "Patient/bob");
});

smart_backends!(transaction_with_an_entry_outside_the_scope_writes_nothing, |srv| {
    let t = writer(&srv).await;
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs(None, "ann"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": obs(None, "bob"), "request": {"method": "POST", "url": "Observation"}}
    ]});
    let r = srv.send_as(&t, "POST", "", Some(tx)).await;
    assert_outcome(r, StatusCode::FORBIDDEN).await;
    assert_eq!(body(srv.get("Observation").await).await["total"], 3, "all or nothing");
});

smart_backends!(chain_into_a_type_not_granted_is_403, |srv| {
    observations(&srv).await;
    let t = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/Observation.rs").await;
    assert_eq!(get(&srv, &t, "Observation").await.status(), StatusCode::OK);
    // An oracle on Patient names otherwise: does an Observation exist whose subject is named X?
    assert_outcome(get(&srv, &t, "Observation?subject:Patient.name=Anders").await, StatusCode::FORBIDDEN).await;
});

smart_backends!(has_into_a_type_not_granted_is_403, |srv| {
    observations(&srv).await;
    let t = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/Patient.rs").await;
    // An oracle on Observations otherwise: which patients have an Observation with this code?
    assert_outcome(get(&srv, &t, "Patient?_has:Observation:subject:code:text=weight").await, StatusCode::FORBIDDEN)
        .await;
});

smart_backends!(chain_under_a_patient_scope_does_not_match_through_another_patient, |srv| {
    let t = token(&srv, ANN).await;
    let b = body(get(&srv, &t, "Observation?subject:Patient.name=Berger").await).await;
    assert_eq!(b["total"], 0, "bob's name finds nothing for ann");
    let b = body(get(&srv, &t, "Patient?_has:Observation:subject:_id=obs-bob").await).await;
    assert_eq!(b["total"], 0);
});

// ---- anonymous reading of the Anonymous security category ---------------------------------

async fn open_server(backend: Backend) -> Option<Server> {
    Server::start_with(backend, "[auth]\nanonymous_read = [\"ValueSet\", \"CodeSystem\"]\n").await
}

backends_from!(configured_anonymous_types_are_readable_without_a_token, open_server, |srv| {
    let vs =
        json!({"resourceType": "ValueSet", "id": "colors", "status": "active", "url": "http://example.org/vs/colors"});
    assert!(srv.put("ValueSet/colors", &vs).await.status().is_success());
    let r = srv.anonymous().get(srv.url("ValueSet/colors")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body(srv.anonymous().get(srv.url("ValueSet?url=http://example.org/vs/colors")).send().await.unwrap()).await["total"],
        1
    );
});

backends_from!(anonymous_caller_gets_401_for_everything_else, open_server, |srv| {
    let p = json!({"resourceType": "Patient", "id": "p1"});
    assert!(srv.put("Patient/p1", &p).await.status().is_success());
    for path in ["Patient/p1", "Patient", "StructureDefinition"] {
        let r = srv.anonymous().get(srv.url(path)).send().await.unwrap();
        assert!(r.headers().get("www-authenticate").is_some(), "{path}");
        assert_outcome(r, StatusCode::UNAUTHORIZED).await;
    }
    let vs = json!({"resourceType": "ValueSet", "status": "active"});
    let r = srv
        .anonymous()
        .post(srv.url("ValueSet"))
        .header("Content-Type", "application/fhir+json")
        .body(vs.to_string())
        .send()
        .await
        .unwrap();
    assert_outcome(r, StatusCode::UNAUTHORIZED).await;
    let r = srv.anonymous().get(srv.url("ValueSet?_has:Observation:subject:_id=x")).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 401), "no oracle through _has: {}", r.status());
});

#[test]
fn anonymous_read_of_a_patient_type_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("bastion-anon-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bastion.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/b.db\"\n[auth]\nanonymous_read = [\"Patient\"]\n", dir.display()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bastion"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Anonymous security category"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
