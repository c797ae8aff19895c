//! Batch and transaction Bundles.

use crate::both_backends;
use crate::harness::*;

fn entry(full_url: &str, resource: Value, method: &str, url: &str) -> Value {
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}})
}

both_backends!(transaction_resolves_urn_uuid_references, |srv| {
    let pat = "urn:uuid:6f1c9a2e-0c4f-4a35-9d0e-1b2c3d4e5f60";
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("urn:uuid:0b7e6e1a-1111-4a35-9d0e-1b2c3d4e5f60",
              json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": pat}}),
              "POST", "Observation"),
        entry(pat, json!({"resourceType": "Patient", "name": [{"family": "Tx"}]}), "POST", "Patient"),
    ]});
    let r = srv.post("", &b).await;
    assert_eq!(r.status(), StatusCode::OK);
    let resp = body(r).await;
    assert_eq!(resp["type"], "transaction-response");
    let e = resp["entry"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0]["response"]["status"], "201 Created");
    let obs_loc = e[0]["response"]["location"].as_str().unwrap();
    let pat_loc = e[1]["response"]["location"].as_str().unwrap();
    let pat_id = pat_loc.trim_start_matches(&srv.url("Patient/")).split('/').next().unwrap();
    let obs = body(srv.client.get(obs_loc).send().await.unwrap()).await;
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pat_id}"));
    assert_eq!(srv.get(&format!("Patient/{pat_id}")).await.status(), StatusCode::OK);
});

both_backends!(transaction_with_one_invalid_entry_stores_nothing, |srv| {
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("urn:uuid:a", json!({"resourceType": "Patient", "name": [{"family": "Good"}]}), "POST", "Patient"),
        entry("urn:uuid:b", json!({"resourceType": "Patient", "id": "p2", "birthDate": "not-a-date"}), "PUT", "Patient/p2"),
        entry("urn:uuid:c", json!({"resourceType": "Patient", "id": "p3"}), "PUT", "Patient/p3"),
    ]});
    let oo = assert_outcome(srv.post("", &b).await, StatusCode::BAD_REQUEST).await;
    assert!(oo.to_string().contains("Bundle.entry[1]"), "{oo}");
    let s = body(srv.get("Patient?_total=accurate").await).await;
    assert_eq!(s["total"], 0, "nothing of the failed transaction is stored");
    assert_outcome(srv.get("Patient/p3").await, StatusCode::NOT_FOUND).await;
    assert!(body(srv.get("_history").await).await.get("entry").is_none());
});

both_backends!(transaction_with_stale_if_match_stores_nothing, |srv| {
    srv.put("Patient/keep", &json!({"resourceType": "Patient", "id": "keep"})).await;
    srv.put("Patient/keep", &json!({"resourceType": "Patient", "id": "keep"})).await;
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("urn:uuid:a", json!({"resourceType": "Patient"}), "POST", "Patient"),
        {"resource": {"resourceType": "Patient", "id": "keep", "gender": "male"}, "request": {"method": "PUT", "url": "Patient/keep", "ifMatch": "W/\"1\""}},
    ]});
    assert_outcome(srv.post("", &b).await, StatusCode::PRECONDITION_FAILED).await;
    let s = body(srv.get("Patient?_total=accurate").await).await;
    assert_eq!(s["total"], 1);
    assert!(body(srv.get("Patient/keep").await).await.get("gender").is_none());
});

both_backends!(transaction_processes_delete_post_put_get_in_order, |srv| {
    srv.put("Patient/old", &json!({"resourceType": "Patient", "id": "old"})).await;
    // Listed in reverse order on purpose.
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/new"}},
        entry(&srv.url("Patient/new"), json!({"resourceType": "Patient", "id": "new", "gender": "female"}), "PUT", "Patient/new"),
        entry("urn:uuid:c", json!({"resourceType": "Patient", "gender": "male"}), "POST", "Patient"),
        {"request": {"method": "DELETE", "url": "Patient/old"}},
    ]});
    let r = srv.post("", &b).await;
    assert_eq!(r.status(), StatusCode::OK);
    let e = body(r).await["entry"].as_array().unwrap().clone();
    assert_eq!(e[0]["response"]["status"], "200 OK");
    assert_eq!(e[0]["resource"]["gender"], "female", "the GET sees the PUT of the same transaction");
    assert_eq!(e[1]["response"]["status"], "201 Created");
    assert_eq!(e[2]["response"]["status"], "201 Created");
    assert_eq!(e[3]["response"]["status"], "204 No Content");
    assert_outcome(srv.get("Patient/old").await, StatusCode::GONE).await;
});

both_backends!(transaction_resolves_conditional_references_and_if_none_exist, |srv| {
    srv.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]})).await;
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("urn:uuid:o", json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient?identifier=urn:mrn|42"}}), "POST", "Observation"),
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|42"}},
    ]});
    let resp = body(srv.post("", &b).await).await;
    let e = resp["entry"].as_array().unwrap();
    assert_eq!(e[1]["response"]["status"], "200 OK", "If-None-Exist matched: nothing created");
    let obs = body(srv.client.get(e[0]["response"]["location"].as_str().unwrap()).send().await.unwrap()).await;
    let patients = body(srv.get("Patient?identifier=urn:mrn|42").await).await;
    assert_eq!(patients["total"], 1);
    let pid = patients["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
    // a conditional reference that matches nothing fails the whole transaction
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("urn:uuid:o", json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient?identifier=urn:mrn|nobody"}}), "POST", "Observation"),
    ]});
    assert_outcome(srv.post("", &b).await, StatusCode::PRECONDITION_FAILED).await;
});

both_backends!(batch_gives_each_entry_its_own_status, |srv| {
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        entry("urn:uuid:a", json!({"resourceType": "Patient", "gender": "male"}), "POST", "Patient"),
        entry("urn:uuid:b", json!({"resourceType": "Patient", "birthDate": "bad"}), "POST", "Patient"),
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "FROB", "url": "Patient"}},
    ]});
    let r = srv.post("", &b).await;
    assert_eq!(r.status(), StatusCode::OK);
    let resp = body(r).await;
    assert_eq!(resp["type"], "batch-response");
    let e = resp["entry"].as_array().unwrap();
    assert_eq!(e.len(), 4);
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert!(e[1]["response"]["status"].as_str().unwrap().starts_with("400"));
    assert_eq!(e[1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert!(e[2]["response"]["status"].as_str().unwrap().starts_with("404"));
    assert!(e[3]["response"]["status"].as_str().unwrap().starts_with("405"));
    let s = body(srv.get("Patient?_total=accurate").await).await;
    assert_eq!(s["total"], 1);
});

both_backends!(bundle_patch_entry_with_binary, |srv| {
    srv.put("Patient/pp", &json!({"resourceType": "Patient", "id": "pp", "gender": "male"})).await;
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .encode(json!([{"op": "replace", "path": "/gender", "value": "female"}]).to_string());
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch},
         "request": {"method": "PATCH", "url": "Patient/pp"}},
    ]});
    let r = srv.post("", &b).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(srv.get("Patient/pp").await).await["gender"], "female");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_with_too_many_entries_rejected_413() {
    let srv = Server::start_with(Backend::Sqlite, "[limits]\nmax_bundle_entries = 3\n").await.unwrap();
    let entries: Vec<Value> = (0..4)
        .map(|i| entry(&format!("urn:uuid:{i}"), json!({"resourceType": "Patient"}), "POST", "Patient"))
        .collect();
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    assert_outcome(srv.post("", &b).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(body(srv.get("Patient?_total=accurate").await).await["total"], 0);
}
