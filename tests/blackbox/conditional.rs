//! Conditional create, update and delete: 0, 1 and many matches.

use crate::both_backends;
use crate::harness::*;

fn with_mrn(mrn: &str) -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}]})
}

async fn conditional_create(srv: &Server, body: &Value, query: &str) -> reqwest::Response {
    srv.client
        .post(srv.url("Patient"))
        .header("Content-Type", "application/fhir+json")
        .header("If-None-Exist", query)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn count(srv: &Server, q: &str) -> u64 {
    body(srv.get(&format!("Patient?{q}")).await).await["total"].as_u64().unwrap()
}

both_backends!(conditional_create_zero_one_many, |srv| {
    let r = conditional_create(&srv, &with_mrn("1"), "identifier=urn:mrn|1").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = body(r).await;
    let r = conditional_create(&srv, &with_mrn("1"), "identifier=urn:mrn|1").await;
    assert_eq!(r.status(), StatusCode::OK, "one match: nothing created");
    assert_eq!(body(r).await["id"], created["id"]);
    assert_eq!(count(&srv, "identifier=urn:mrn|1").await, 1);
    srv.create(&with_mrn("2")).await;
    srv.create(&with_mrn("2")).await;
    assert_outcome(
        conditional_create(&srv, &with_mrn("2"), "identifier=urn:mrn|2").await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(count(&srv, "identifier=urn:mrn|2").await, 2);
    assert_outcome(conditional_create(&srv, &with_mrn("3"), "bogus=1").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(conditional_update_zero_one_many, |srv| {
    let r = srv.put("Patient?identifier=urn:mrn|7", &with_mrn("7")).await;
    assert_eq!(r.status(), StatusCode::CREATED, "no match: create");
    let id = body(r).await["id"].as_str().unwrap().to_string();
    let mut changed = with_mrn("7");
    changed["gender"] = json!("female");
    let r = srv.put("Patient?identifier=urn:mrn|7", &changed).await;
    assert_eq!(r.status(), StatusCode::OK, "one match: update it");
    let v = body(r).await;
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["meta"]["versionId"], "2");
    srv.create(&with_mrn("8")).await;
    srv.create(&with_mrn("8")).await;
    assert_outcome(srv.put("Patient?identifier=urn:mrn|8", &with_mrn("8")).await, StatusCode::PRECONDITION_FAILED)
        .await;
    // one match but the body names another id
    let mut other = with_mrn("7");
    other["id"] = json!("someone-else");
    assert_outcome(srv.put("Patient?identifier=urn:mrn|7", &other).await, StatusCode::BAD_REQUEST).await;
});

both_backends!(conditional_delete_zero_one_many, |srv| {
    assert_eq!(srv.delete("Patient?identifier=urn:mrn|none").await.status(), StatusCode::NO_CONTENT);
    let v = srv.create(&with_mrn("5")).await;
    assert_eq!(srv.delete("Patient?identifier=urn:mrn|5").await.status(), StatusCode::NO_CONTENT);
    assert_outcome(srv.get(&format!("Patient/{}", v["id"].as_str().unwrap())).await, StatusCode::GONE).await;
    srv.create(&with_mrn("6")).await;
    srv.create(&with_mrn("6")).await;
    assert_outcome(srv.delete("Patient?identifier=urn:mrn|6").await, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(count(&srv, "identifier=urn:mrn|6").await, 2);
    // a conditional delete needs criteria
    assert_outcome(srv.delete("Patient").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(conditional_match_by_id, |srv| {
    let v = srv.create(&with_mrn("9")).await;
    let id = v["id"].as_str().unwrap();
    let r = conditional_create(&srv, &with_mrn("9"), &format!("_id={id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
});
