//! Bad input: each gets a clear OperationOutcome with the right status, and changes nothing.

use crate::both_backends;
use crate::harness::*;

async fn patient_count(srv: &Server) -> u64 {
    body(srv.get("Patient?_total=accurate&_count=0").await).await["total"].as_u64().unwrap()
}

async fn send_raw(srv: &Server, method: &str, path: &str, content_type: &str, text: String) -> reqwest::Response {
    srv.client
        .request(method.parse().unwrap(), srv.url(path))
        .header("Content-Type", content_type)
        .body(text)
        .send()
        .await
        .unwrap()
}

both_backends!(malformed_json_rejected_400, |srv| {
    let r = send_raw(&srv, "POST", "Patient", "application/fhir+json", "{\"resourceType\": \"Patient\", ".into()).await;
    let oo = assert_outcome(r, StatusCode::BAD_REQUEST).await;
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(missing_resource_type_rejected_400, |srv| {
    let oo =
        assert_outcome(srv.post("Patient", &json!({"name": [{"family": "X"}]})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(oo["issue"][0]["expression"][0], "resourceType");
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(wrong_resource_type_for_url_rejected_400, |srv| {
    assert_outcome(srv.post("Patient", &json!({"resourceType": "Observation"})).await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.post("Patient", &json!({"resourceType": "NoSuchType"})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(body_and_url_id_mismatch_rejected_400, |srv| {
    let r = srv.put("Patient/abc", &json!({"resourceType": "Patient", "id": "xyz"})).await;
    let oo = assert_outcome(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(oo["issue"][0]["expression"][0], "Patient.id");
    let r = srv.put("Patient/abc", &json!({"resourceType": "Patient"})).await;
    assert_outcome(r, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Patient/abc").await, StatusCode::NOT_FOUND).await;
});

both_backends!(unknown_element_rejected_400_with_expression, |srv| {
    let r = srv.post("Patient", &json!({"resourceType": "Patient", "nmae": [{"family": "X"}]})).await;
    let oo = assert_outcome(r, StatusCode::BAD_REQUEST).await;
    let text = oo.to_string();
    assert!(text.contains("Patient.nmae"), "{text}");
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(wrong_primitive_format_rejected_400_with_expression, |srv| {
    for (field, value) in [
        ("birthDate", json!("1990-13-01")),
        ("birthDate", json!("1990-02-30")),
        ("active", json!("yes")),
        ("gender", json!("")),
    ] {
        let r = srv.post("Patient", &json!({"resourceType": "Patient", field: value})).await;
        let oo = assert_outcome(r, StatusCode::BAD_REQUEST).await;
        assert!(oo.to_string().contains(&format!("Patient.{field}")), "{field}: {oo}");
    }
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(too_deep_nesting_rejected_400, |srv| {
    // 5,000 nested extensions: deeper than any limit, and than any stack should go.
    let mut text = String::from("{\"resourceType\":\"Patient\",\"extension\":[");
    for _ in 0..5000 {
        text.push_str("{\"url\":\"http://x\",\"extension\":[");
    }
    for _ in 0..5000 {
        text.push_str("]}");
    }
    text.push_str("]}");
    assert_outcome(send_raw(&srv, "POST", "Patient", "application/fhir+json", text).await, StatusCode::BAD_REQUEST)
        .await;
    // and a nesting that JSON parses but exceeds the configured depth
    let mut v = json!({"url": "http://x", "valueString": "leaf"});
    for _ in 0..80 {
        v = json!({"url": "http://x", "extension": [v]});
    }
    assert_outcome(
        srv.post("Patient", &json!({"resourceType": "Patient", "extension": [v]})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(patient_count(&srv).await, 0);
    assert_eq!(srv.get("metadata").await.status(), StatusCode::OK, "server still up");
});

both_backends!(put_to_invalid_id_rejected_400, |srv| {
    for id in ["bad$id", "a_b", &"x".repeat(65)] {
        let r = srv.put(&format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id})).await;
        assert_outcome(r, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(unsupported_media_type_rejected_415, |srv| {
    let p = json!({"resourceType": "Patient"}).to_string();
    for ct in ["text/plain", "application/xml", "application/fhir+xml", "application/x-www-form-urlencoded"] {
        assert_outcome(send_raw(&srv, "POST", "Patient", ct, p.clone()).await, StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .await;
    }
    let r = srv.client.post(srv.url("Patient")).body(p.clone()).send().await.unwrap();
    assert_outcome(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(bundle_of_wrong_type_posted_to_base_rejected_400, |srv| {
    for t in ["document", "collection", "searchset", "message"] {
        let b = json!({"resourceType": "Bundle", "type": t, "entry": [{"resource": {"resourceType": "Patient"}}]});
        let oo = assert_outcome(srv.post("", &b).await, StatusCode::BAD_REQUEST).await;
        assert!(oo.to_string().contains(t));
    }
    let oo = assert_outcome(srv.post("", &json!({"resourceType": "Patient"})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(oo["issue"][0]["expression"][0], "resourceType");
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(method_not_allowed_is_405, |srv| {
    assert_outcome(srv.delete("metadata").await, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_outcome(srv.post("Patient/123", &json!({"resourceType": "Patient"})).await, StatusCode::METHOD_NOT_ALLOWED)
        .await;
    assert_outcome(srv.delete("Patient/123/_history/1").await, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(patient_count(&srv).await, 0);
});

both_backends!(unknown_resource_type_is_404, |srv| {
    assert_outcome(srv.get("Patinet/1").await, StatusCode::NOT_FOUND).await;
    assert_outcome(srv.post("Patinet", &json!({"resourceType": "Patinet"})).await, StatusCode::NOT_FOUND).await;
});

both_backends!(bad_search_values_are_400_not_500, |srv| {
    assert_outcome(srv.get("Patient?_id=a%2Fb").await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Patient?_count=-1").await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Patient?identifier=a|b|c").await, StatusCode::BAD_REQUEST).await;
    let r = srv.client.get(srv.url("Patient?nonsense=1")).header("Prefer", "handling=strict").send().await.unwrap();
    assert_outcome(r, StatusCode::BAD_REQUEST).await;
    // lenient (default): ignored and reported
    let s = body(srv.get("Patient?nonsense=1").await).await;
    assert!(s.to_string().contains("nonsense"));
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_body_rejected_413() {
    let srv = Server::start_with(Backend::Sqlite, "[limits]\nmax_body_bytes = 4096\n").await.unwrap();
    let big = json!({"resourceType": "Patient", "name": [{"family": "x".repeat(10_000)}]});
    assert_outcome(srv.post("Patient", &big).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    // chunked, without Content-Length
    let stream = futures_stream(big.to_string().into_bytes());
    let r = srv
        .client
        .post(srv.url("Patient"))
        .header("Content-Type", "application/fhir+json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_outcome(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(patient_count(&srv).await, 0);
}

fn futures_stream(bytes: Vec<u8>) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter(bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect::<Vec<_>>())
}
