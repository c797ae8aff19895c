//! History at instance, type and system level, `_since`, `_count` and paging.

use crate::both_backends;
use crate::harness::*;

async fn all_pages(srv: &Server, first: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut url = srv.url(first);
    for _ in 0..100 {
        let page = body(srv.client.get(&url).send().await.unwrap()).await;
        assert_eq!(page["type"], "history");
        entries.extend(page["entry"].as_array().cloned().unwrap_or_default());
        match page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(next) => url = next["url"].as_str().unwrap().to_string(),
            None => return entries,
        }
    }
    panic!("paging never ended");
}

both_backends!(instance_history_is_newest_first_with_request_and_response, |srv| {
    let v1 = srv.create(&json!({"resourceType": "Patient", "gender": "male"})).await;
    let id = v1["id"].as_str().unwrap().to_string();
    let mut v = v1.clone();
    v["gender"] = json!("female");
    srv.put(&format!("Patient/{id}"), &v).await;
    srv.delete(&format!("Patient/{id}")).await;
    let h = body(srv.get(&format!("Patient/{id}/_history")).await).await;
    let e = h["entry"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert_eq!(e[1]["request"]["method"], "PUT");
    assert_eq!(e[1]["resource"]["meta"]["versionId"], "2");
    assert_eq!(e[1]["response"]["etag"], "W/\"2\"");
    assert_eq!(e[2]["request"]["method"], "POST");
    assert_eq!(e[2]["response"]["status"], "201 Created");
    assert_eq!(e[2]["fullUrl"], srv.url(&format!("Patient/{id}")));
    assert_outcome(srv.get("Patient/nobody/_history").await, StatusCode::NOT_FOUND).await;
});

both_backends!(type_and_system_history, |srv| {
    srv.create(&json!({"resourceType": "Patient"})).await;
    srv.create(&json!({"resourceType": "Patient"})).await;
    srv.create(&json!({"resourceType": "Organization", "name": "O"})).await;
    let t = body(srv.get("Patient/_history").await).await;
    assert_eq!(t["entry"].as_array().unwrap().len(), 2);
    let s = body(srv.get("_history").await).await;
    assert_eq!(s["entry"].as_array().unwrap().len(), 3);
    assert_eq!(s["entry"][0]["resource"]["resourceType"], "Organization");
});

both_backends!(history_since_filters_by_last_updated, |srv| {
    srv.create(&json!({"resourceType": "Patient"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let marker = srv.create(&json!({"resourceType": "Patient", "gender": "other"})).await;
    let since = marker["meta"]["lastUpdated"].as_str().unwrap();
    let h = body(srv.get(&format!("Patient/_history?_since={}", since.replace('+', "%2B"))).await).await;
    let e = h["entry"].as_array().unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["resource"]["gender"], "other");
    assert_outcome(srv.get("Patient/_history?_since=yesterday").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(history_paging_visits_every_version_once, |srv| {
    let v = srv.create(&json!({"resourceType": "Patient"})).await;
    let id = v["id"].as_str().unwrap().to_string();
    for _ in 0..6 {
        srv.put(&format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id})).await;
    }
    let entries = all_pages(&srv, &format!("Patient/{id}/_history?_count=2")).await;
    let versions: Vec<String> =
        entries.iter().map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap().to_string()).collect();
    assert_eq!(versions, vec!["7", "6", "5", "4", "3", "2", "1"]);
    // a write after the first page does not shift later pages
    let first = body(srv.get(&format!("Patient/{id}/_history?_count=3")).await).await;
    srv.put(&format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id})).await;
    let next = first["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let page2 = body(srv.client.get(next).send().await.unwrap()).await;
    assert_eq!(page2["entry"][0]["resource"]["meta"]["versionId"], "4");
});
