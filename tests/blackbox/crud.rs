//! read, vread, create, update, delete, JSON Patch, and the headers around them.

use crate::both_backends;
use crate::harness::*;

async fn json_patch(srv: &Server, path: &str, patch: &Value) -> reqwest::Response {
    srv.client
        .patch(srv.url(path))
        .header("Content-Type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap()
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Ann"]}], "gender": "female", "birthDate": "1980-05-17"})
}

both_backends!(create_assigns_server_id_version_and_headers, |srv| {
    let mut p = patient("Create");
    p["id"] = json!("client-chosen");
    let r = srv.post("Patient", &p).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["etag"], "W/\"1\"");
    assert!(r.headers().contains_key("last-modified"));
    let v = body(r).await;
    let id = v["id"].as_str().unwrap();
    assert_ne!(id, "client-chosen", "the server assigns the id on create");
    assert_eq!(location, srv.url(&format!("Patient/{id}/_history/1")));
    assert_eq!(v["meta"]["versionId"], "1");
    assert!(v["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    let read = body(srv.get(&format!("Patient/{id}")).await).await;
    assert_eq!(read, v, "read returns exactly what create returned");
});

both_backends!(read_unknown_is_404_outcome, |srv| {
    assert_outcome(srv.get("Patient/does-not-exist").await, StatusCode::NOT_FOUND).await;
});

both_backends!(update_increments_version_and_vread_keeps_each, |srv| {
    let v1 = srv.create(&patient("One")).await;
    let id = v1["id"].as_str().unwrap().to_string();
    let mut next = v1.clone();
    next["name"][0]["family"] = json!("Two");
    let r = srv.put(&format!("Patient/{id}"), &next).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "W/\"2\"");
    let v2 = body(r).await;
    assert_eq!(v2["meta"]["versionId"], "2");
    let old = body(srv.get(&format!("Patient/{id}/_history/1")).await).await;
    assert_eq!(old["name"][0]["family"], "One");
    let new = srv.get(&format!("Patient/{id}/_history/2")).await;
    assert_eq!(new.headers()["etag"], "W/\"2\"");
    assert_eq!(body(new).await["name"][0]["family"], "Two");
    assert_outcome(srv.get(&format!("Patient/{id}/_history/3")).await, StatusCode::NOT_FOUND).await;
});

both_backends!(update_to_new_client_id_creates, |srv| {
    let mut p = patient("Client");
    p["id"] = json!("my-own-id");
    let r = srv.put("Patient/my-own-id", &p).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(body(r).await["meta"]["versionId"], "1");
    assert_eq!(srv.get("Patient/my-own-id").await.status(), StatusCode::OK);
});

both_backends!(delete_leaves_tombstone_read_is_410, |srv| {
    let v1 = srv.create(&patient("Gone")).await;
    let id = v1["id"].as_str().unwrap();
    let r = srv.delete(&format!("Patient/{id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_outcome(srv.get(&format!("Patient/{id}")).await, StatusCode::GONE).await;
    assert_outcome(srv.get(&format!("Patient/{id}/_history/2")).await, StatusCode::GONE).await;
    // the old version is still there
    assert_eq!(srv.get(&format!("Patient/{id}/_history/1")).await.status(), StatusCode::OK);
    let h = body(srv.get(&format!("Patient/{id}/_history")).await).await;
    assert_eq!(h["entry"][0]["request"]["method"], "DELETE");
    assert!(h["entry"][0].get("resource").is_none());
    // deleting again, or something that never existed, is fine
    assert_eq!(srv.delete(&format!("Patient/{id}")).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(srv.delete("Patient/never-was").await.status(), StatusCode::NO_CONTENT);
    // a deleted resource can be brought back with PUT
    let mut again = patient("Back");
    again["id"] = json!(id);
    let r = srv.put(&format!("Patient/{id}"), &again).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(body(r).await["meta"]["versionId"], "3");
});

both_backends!(if_match_stale_version_is_412_and_changes_nothing, |srv| {
    let v1 = srv.create(&patient("Match")).await;
    let id = v1["id"].as_str().unwrap().to_string();
    srv.put(&format!("Patient/{id}"), &v1).await; // now version 2
    let mut stale = v1.clone();
    stale["name"][0]["family"] = json!("Lost update");
    let r = srv.send_with("PUT", &format!("Patient/{id}"), Some(&stale), &[("If-Match", "W/\"1\"")]).await;
    assert_outcome(r, StatusCode::PRECONDITION_FAILED).await;
    let now = body(srv.get(&format!("Patient/{id}")).await).await;
    assert_eq!(now["meta"]["versionId"], "2");
    assert_eq!(now["name"][0]["family"], "Match");
    // the current version matches
    let r = srv.send_with("PUT", &format!("Patient/{id}"), Some(&stale), &[("If-Match", "W/\"2\"")]).await;
    assert_eq!(r.status(), StatusCode::OK);
});

both_backends!(if_none_match_and_if_modified_since_give_304, |srv| {
    let v1 = srv.create(&patient("Cache")).await;
    let id = v1["id"].as_str().unwrap();
    let r = srv.send_with("GET", &format!("Patient/{id}"), None, &[("If-None-Match", "W/\"1\"")]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = srv.send_with("GET", &format!("Patient/{id}"), None, &[("If-None-Match", "W/\"9\"")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let lm = r.headers()["last-modified"].to_str().unwrap().to_string();
    let r = srv.send_with("GET", &format!("Patient/{id}"), None, &[("If-Modified-Since", &lm)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = srv
        .send_with("GET", &format!("Patient/{id}"), None, &[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
});

both_backends!(prefer_return_minimal_and_operation_outcome, |srv| {
    let r = srv.send_with("POST", "Patient", Some(&patient("Min")), &[("Prefer", "return=minimal")]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().contains_key("location"));
    assert!(r.text().await.unwrap().is_empty());
    let r = srv.send_with("POST", "Patient", Some(&patient("OO")), &[("Prefer", "return=OperationOutcome")]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(body(r).await["resourceType"], "OperationOutcome");
});

both_backends!(json_patch_creates_a_new_version, |srv| {
    let v1 = srv.create(&patient("Patch")).await;
    let id = v1["id"].as_str().unwrap();
    let patch = json!([{"op": "replace", "path": "/name/0/family", "value": "Patched"}, {"op": "add", "path": "/active", "value": true}]);
    let r = json_patch(&srv, &format!("Patient/{id}"), &patch).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v2 = body(r).await;
    assert_eq!(v2["meta"]["versionId"], "2");
    assert_eq!(v2["name"][0]["family"], "Patched");
    assert_eq!(v2["active"], true);
    let h = body(srv.get(&format!("Patient/{id}/_history")).await).await;
    assert_eq!(h["entry"][0]["request"]["method"], "PATCH");
});

both_backends!(json_patch_making_the_resource_invalid_is_422, |srv| {
    let v1 = srv.create(&patient("Patch")).await;
    let id = v1["id"].as_str().unwrap();
    let patch = json!([{"op": "add", "path": "/birthDate", "value": "not-a-date"}]);
    let r = json_patch(&srv, &format!("Patient/{id}"), &patch).await;
    assert_outcome(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body(srv.get(&format!("Patient/{id}")).await).await["meta"]["versionId"], "1");
});

both_backends!(decimal_precision_and_extensions_round_trip_exactly, |srv| {
    let obs = json!({
        "resourceType": "Observation", "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 1.50, "unit": "kg"},
        "extension": [{"url": "http://example.org/ext", "valueString": "kept"}]
    });
    // serde_json would print 1.5; send the literal text the client wrote.
    let text = obs.to_string().replace("1.5", "1.50");
    let r = srv
        .client
        .post(srv.url("Observation"))
        .header("Content-Type", "application/fhir+json")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = body(r).await["id"].as_str().unwrap().to_string();
    let raw = srv.get(&format!("Observation/{id}")).await.text().await.unwrap();
    assert!(raw.contains("\"value\":1.50"), "{raw}");
    assert!(raw.contains("\"valueString\":\"kept\""));
    let p = json!({"resourceType": "Patient", "name": [{"given": ["A", "B"]}],
        "_birthDate": {"extension": [{"url": "http://example.org/time", "valueDateTime": "1970-01-01T10:00:00Z"}]},
        "birthDate": "1970-01-01"});
    let v = srv.create(&p).await;
    assert_eq!(v["_birthDate"], p["_birthDate"]);
});

both_backends!(format_parameter_and_content_types, |srv| {
    assert_eq!(srv.get("metadata?_format=json").await.status(), StatusCode::OK);
    assert_eq!(srv.get("metadata?_format=application/fhir%2Bjson").await.status(), StatusCode::OK);
    assert_outcome(srv.get("metadata?_format=xml").await, StatusCode::NOT_ACCEPTABLE).await;
    let r = srv.send_with("GET", "metadata", None, &[("Accept", "application/fhir+xml")]).await;
    assert_outcome(r, StatusCode::NOT_ACCEPTABLE).await;
    // application/json is accepted for writes too
    let r = srv
        .client
        .post(srv.url("Patient"))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(patient("J").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/fhir+json"));
});

both_backends!(head_answers_like_get_without_a_body, |srv| {
    let v = srv.create(&patient("Head")).await;
    let r = srv.client.head(srv.url(&format!("Patient/{}", v["id"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "W/\"1\"");
});

both_backends!(token_search_finds_by_identifier_and_code, |srv| {
    let mut a = patient("A");
    a["identifier"] = json!([{"system": "urn:mrn", "value": "111"}]);
    let mut b = patient("B");
    b["identifier"] = json!([{"system": "urn:other", "value": "111"}]);
    b["gender"] = json!("male");
    srv.create(&a).await;
    srv.create(&b).await;
    let s = body(srv.get("Patient?identifier=urn:mrn|111").await).await;
    assert_eq!(s["total"], 1);
    assert_eq!(s["entry"][0]["resource"]["name"][0]["family"], "A");
    assert_eq!(s["entry"][0]["search"]["mode"], "match");
    let s = body(srv.get("Patient?identifier=111").await).await;
    assert_eq!(s["total"], 2);
    let s = body(srv.get("Patient?identifier=111&gender=male").await).await;
    assert_eq!(s["total"], 1);
    let s = body(srv.get("Patient?gender=male,female").await).await;
    assert_eq!(s["total"], 2);
    // values with SQL metacharacters are data
    let s = body(srv.get("Patient?identifier=x'%20OR%20'1'%3D'1").await).await;
    assert_eq!(s["total"], 0);
});

both_backends!(concurrent_updates_of_one_resource_all_land_in_order, |srv| {
    srv.put("Patient/busy", &json!({"resourceType": "Patient", "id": "busy"})).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, url) = (srv.client.clone(), srv.url("Patient/busy"));
        tasks.push(tokio::spawn(async move {
            let body = json!({"resourceType": "Patient", "id": "busy", "name": [{"family": format!("W{i}")}]});
            client
                .put(url)
                .header("Content-Type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK, "no concurrent update is lost or refused");
    }
    let now = body(srv.get("Patient/busy").await).await;
    assert_eq!(now["meta"]["versionId"], "21");
    let h = body(srv.get("Patient/busy/_history?_count=100").await).await;
    let versions: Vec<&str> =
        h["entry"].as_array().unwrap().iter().map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=21).rev().map(|v| v.to_string()).collect();
    assert_eq!(versions, expected);
});
