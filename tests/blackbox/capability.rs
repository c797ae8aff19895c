//! `GET /metadata` and `/health`.

use crate::both_backends;
use crate::harness::*;

both_backends!(metadata_describes_what_the_server_supports, |srv| {
    let r = srv.get("metadata").await;
    assert_eq!(r.status(), StatusCode::OK);
    let cs = body(r).await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let rest = &cs["rest"][0];
    let patient = rest["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Patient").unwrap();
    let codes: Vec<&str> =
        patient["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    for c in ["read", "vread", "create", "update", "patch", "delete", "history-instance", "search-type"] {
        assert!(codes.contains(&c), "{c}");
    }
    assert_eq!(patient["operation"][0]["name"], "everything");
    let params: Vec<&str> =
        patient["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for p in ["identifier", "_id", "_lastUpdated", "name", "birthdate", "general-practitioner"] {
        assert!(params.contains(&p), "{p}");
    }
    // only what the server implements: composite search is not there yet
    let obs = rest["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Observation").unwrap();
    let obs_params: Vec<&str> =
        obs["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(obs_params.contains(&"date") && obs_params.contains(&"subject"));
    assert!(obs_params.contains(&"value-quantity"));
    assert!(obs_params.contains(&"code-value-quantity") && obs_params.contains(&"_content"));
    let seq = rest["resource"].as_array().unwrap().iter().find(|r| r["type"] == "MolecularSequence").unwrap();
    assert!(
        !seq["searchParam"].as_array().unwrap().iter().any(|p| p["name"] == "chromosome-variant-coordinate"),
        "three-part composites are not offered"
    );
    let sys: Vec<&str> = rest["interaction"].as_array().unwrap().iter().map(|i| i["code"].as_str().unwrap()).collect();
    assert!(sys.contains(&"transaction") && sys.contains(&"batch") && sys.contains(&"search-system"));
    assert!(rest["resource"].as_array().unwrap().len() > 140);
});

both_backends!(health_reports_pass, |srv| {
    let r = srv.client.get(format!("{}/health", srv.root)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "pass");
});
