//! Privacy labels that decide whether a resource may be stored at all (the start of the
//! privacy issue): `DELAU` is never persisted, and a redacted, masked or subsetted copy never
//! overwrites or stands for the full record.

use crate::both_backends;
use crate::harness::*;

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const OBSERVATION_VALUE: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

fn observation(meta: Value) -> Value {
    let mut o = json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}});
    if meta.as_object().is_some_and(|m| !m.is_empty()) {
        o["meta"] = meta;
    }
    o
}

async fn expression_of(r: reqwest::Response) -> String {
    let oo = assert_outcome(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    oo["issue"][0]["expression"][0].as_str().unwrap_or("").to_string()
}

both_backends!(delete_after_use_resource_is_never_stored, |srv| {
    let delau = observation(json!({"security": [{"system": ACT_CODE, "code": "DELAU"}]}));
    assert_eq!(expression_of(srv.post("Observation", &delau).await).await, "meta.security");
    assert_eq!(expression_of(srv.put("Observation/o1", &delau).await).await, "meta.security");
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p1"}, "request": {"method": "PUT", "url": "Patient/p1"}},
        {"resource": delau, "request": {"method": "PUT", "url": "Observation/o1"}}]});
    assert_outcome(srv.post("", &tx).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body(srv.get("Observation").await).await["total"], 0);
    assert_eq!(srv.get("Patient/p1").await.status(), StatusCode::NOT_FOUND, "the transaction wrote nothing");
});

both_backends!(redacted_masked_or_subsetted_copy_cannot_overwrite_the_record, |srv| {
    assert!(srv.put("Observation/o1", &observation(json!({}))).await.status().is_success());
    for (list, code) in [("security", "REDACTED"), ("security", "MASKED"), ("tag", "SUBSETTED")] {
        let copy = observation(json!({list: [{"system": OBSERVATION_VALUE, "code": code}]}));
        assert_eq!(expression_of(srv.put("Observation/o1", &copy).await).await, format!("meta.{list}"), "{code}");
        assert_outcome(srv.post("Observation", &copy).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let patch =
        json!([{"op": "add", "path": "/meta/security", "value": [{"system": OBSERVATION_VALUE, "code": "REDACTED"}]}]);
    let r = srv
        .client
        .patch(srv.url("Observation/o1"))
        .header("Content-Type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_outcome(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body(srv.get("Observation/o1").await).await["meta"]["versionId"], "1", "the record is untouched");
    let other = observation(json!({"security": [{"system": "http://example.org/not-v3", "code": "REDACTED"}]}));
    assert!(
        srv.put("Observation/o1", &other).await.status().is_success(),
        "the same code in another system is no label of ours"
    );
});
