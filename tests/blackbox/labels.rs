//! Security labels over HTTP (issue 6, points 1-4 and 6): confidentiality up to the caller's
//! clearance, sensitivities only for roles that hold them, unknown labels hidden from
//! everyone, labels that a plain write cannot remove or lower, Bundle high-water marks, test
//! data left out of searches, break the glass. Every read path is tried: read, vread,
//! search, `_security` search, include, revinclude, history, `$everything`, batch. Both
//! backends.

use crate::backends_from;
use crate::harness::*;
use crate::smart::{Authorize, PASSWORD, code_for, exchange, seed, smart_toml, tokens_for};

const CONF: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const REPORTING: &str = "reporting";
const CAPPED_APP: &str = "capped-app";
const CAPPED_REDIRECT: &str = "http://localhost:9100/callback";
const REPORTING_SECRET: &str = "reporting-secret-0123456789abcdef";

fn labels_toml() -> String {
    let hash = bastion_auth::secret::hash_password(PASSWORD).unwrap();
    format!(
        r#"{base}
[[users]]
username = "dr-plain"
password = "{hash}"
fhir_user = "Practitioner/dr-plain"
roles = ["clinician"]

[[users]]
username = "dr-psych"
password = "{hash}"
fhir_user = "Practitioner/dr-psych"
roles = ["psychiatrist"]
clearance = "R"

[[users]]
username = "dr-all"
password = "{hash}"
fhir_user = "Practitioner/dr-all"
roles = ["all-sensitivities"]
clearance = "V"

[[users]]
username = "dr-er"
password = "{hash}"
fhir_user = "Practitioner/dr-er"
roles = ["clinician"]
break_glass = true

[[roles]]
name = "psychiatrist"
permissions = ["user/*.cruds"]
sensitivity = ["PSY"]

[[roles]]
name = "all-sensitivities"
permissions = ["user/*.cruds"]
sensitivity = ["*"]

[[users]]
username = "desk"
password = "{hash}"
fhir_user = "Practitioner/desk"
roles = ["front-desk"]

[[roles]]
name = "front-desk"
permissions = ["user/Patient.rs"]

[[masking]]
name = "contact-details"
types = ["Patient"]
elements = ["telecom", "address"]
roles = ["front-desk"]

[[labelling]]
name = "mental-health"
types = ["Observation", "Condition"]
codes = ["http://snomed.info/sct|35489007"]
labels = ["{ACT_CODE}|PSY"]
confidentiality = "R"

[[clients]]
id = "{CAPPED_APP}"
kind = "public"
redirect_uris = ["{CAPPED_REDIRECT}"]
scopes = "openid fhirUser user/*.cruds"
clearance = "N"

[[clients]]
id = "{REPORTING}"
kind = "confidential"
secret = "{REPORTING_SECRET}"
scopes = "system/*.rs"
clearance = "L"
"#,
        base = smart_toml()
    )
}

fn labelled(id: &str, labels: &[(&str, &str)]) -> Value {
    let security: Vec<Value> = labels.iter().map(|(s, c)| json!({"system": s, "code": c})).collect();
    let mut o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": id},
        "subject": {"reference": "Patient/ann"}});
    if !security.is_empty() {
        o["meta"] = json!({"security": security});
    }
    o
}

/// ann's record: a plain Observation that points at the others, one labelled PSY, one
/// restricted, one very restricted, one with a label nobody knows, one of test data, and
/// one labelled low.
async fn labels_server(backend: Backend) -> Option<Server> {
    let srv = Server::start_with(backend, &labels_toml()).await?;
    seed(&srv).await;
    let mut plain = labelled("plain", &[]);
    plain["hasMember"] = json!([{"reference": "Observation/psy"}, {"reference": "Observation/restricted"}]);
    for o in [
        plain,
        labelled("psy", &[(ACT_CODE, "PSY")]),
        labelled("restricted", &[(CONF, "R")]),
        labelled("very", &[(CONF, "V")]),
        labelled("unknown", &[("http://example.org/our-labels", "secret")]),
        labelled("test", &[(ACT_REASON, "HTEST")]),
        labelled("low", &[(CONF, "L"), (ACT_CODE, "NORDSCLCD")]),
    ] {
        let id = o["id"].as_str().unwrap().to_string();
        let r = srv.put(&format!("Observation/{id}"), &o).await;
        assert!(r.status().is_success(), "{id}: {}", r.status());
    }
    Some(srv)
}

async fn user_token(srv: &Server, user: &str) -> String {
    tokens_for(srv, "openid fhirUser user/*.cruds", user).await["access_token"].as_str().unwrap().to_string()
}

async fn btg_token(srv: &Server, user: &str) -> String {
    let mut a = Authorize::new(srv, "openid fhirUser user/*.cruds");
    a.extra.push(("purpose_of_use".into(), "BTG".into()));
    let code = code_for(srv, &a, user).await;
    let r = exchange(srv, &code, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

/// A JSON Patch as the caller of `token`.
async fn patch_as(srv: &Server, token: &str, path: &str, patch: &Value) -> reqwest::Response {
    srv.anonymous()
        .patch(srv.url(path))
        .bearer_auth(token)
        .header("Content-Type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .unwrap()
}

async fn get_as(srv: &Server, token: &str, path: &str) -> reqwest::Response {
    srv.send_as(token, "GET", path, None).await
}

async fn ids_as(srv: &Server, token: &str, path: &str) -> Vec<String> {
    let r = get_as(srv, token, path).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let mut ids = entry_refs(&body(r).await);
    ids.sort();
    ids
}

fn has(ids: &[String], r: &str) -> bool {
    ids.iter().any(|i| i == r)
}

backends_from!(clinician_without_psy_never_sees_a_psy_observation_on_any_path, labels_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await;
    assert_outcome(get_as(&srv, &plain, "Observation/psy").await, StatusCode::NOT_FOUND).await;
    assert_outcome(get_as(&srv, &plain, "Observation/psy/_history/1").await, StatusCode::NOT_FOUND).await;
    assert_outcome(get_as(&srv, &plain, "Observation/psy/_history").await, StatusCode::NOT_FOUND).await;
    for path in [
        "Observation?subject=Patient/ann",
        "Observation?_security=PSY",
        &format!("Observation?_security={ACT_CODE}|PSY"),
        "Observation?_id=plain&_include=Observation:has-member",
        "Patient?_id=ann&_revinclude=Observation:subject",
        "Observation/_history",
        "_history",
        "Patient/ann/$everything",
        "Patient/ann/Observation",
        "?_type=Observation",
    ] {
        let ids = ids_as(&srv, &plain, path).await;
        assert!(!has(&ids, "Observation/psy"), "{path}: {ids:?}");
    }
    // The plain record is there, so the searches did run.
    assert!(has(&ids_as(&srv, &plain, "Observation?subject=Patient/ann").await, "Observation/plain"));
    // A total counts only what may be seen.
    let b = body(get_as(&srv, &plain, "Observation?_security=PSY").await).await;
    assert_eq!(b["total"], 0);
});

backends_from!(role_holding_psy_sees_the_psy_observation, labels_server, |srv| {
    let psych = user_token(&srv, "dr-psych").await;
    assert_eq!(get_as(&srv, &psych, "Observation/psy").await.status(), StatusCode::OK);
    let ids = ids_as(&srv, &psych, "Observation?_id=plain&_include=Observation:has-member").await;
    assert!(has(&ids, "Observation/psy") && has(&ids, "Observation/restricted"), "{ids:?}");
    assert!(has(&ids_as(&srv, &psych, "Observation?_security=PSY").await, "Observation/psy"));
});

backends_from!(confidentiality_above_the_clearance_is_hidden, labels_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await; // clearance N by default
    let psych = user_token(&srv, "dr-psych").await; // R
    let all = user_token(&srv, "dr-all").await; // V
    assert_outcome(get_as(&srv, &plain, "Observation/restricted").await, StatusCode::NOT_FOUND).await;
    assert_eq!(get_as(&srv, &psych, "Observation/restricted").await.status(), StatusCode::OK);
    assert_outcome(get_as(&srv, &psych, "Observation/very").await, StatusCode::NOT_FOUND).await;
    assert_eq!(get_as(&srv, &all, "Observation/very").await.status(), StatusCode::OK);
    let ids = ids_as(&srv, &plain, "Observation?_id=plain&_include=Observation:has-member").await;
    assert_eq!(ids, vec!["Observation/plain".to_string()], "neither psy nor restricted is included");
});

backends_from!(resource_without_a_label_has_the_default_confidentiality, labels_server, |srv| {
    // The reporting client's clearance is L: unlabelled records are N by default, so it sees
    // only what is labelled L or lower.
    let t = srv.client_credentials(REPORTING, REPORTING_SECRET, "system/*.rs").await;
    let ids = ids_as(&srv, &t, "Observation?subject=Patient/ann").await;
    assert_eq!(ids, vec!["Observation/low".to_string()]);
    assert_outcome(get_as(&srv, &t, "Observation/plain").await, StatusCode::NOT_FOUND).await;
    assert_outcome(get_as(&srv, &t, "Patient/ann").await, StatusCode::NOT_FOUND).await;
});

backends_from!(unknown_label_hides_the_resource_from_every_reader, labels_server, |srv| {
    let all = user_token(&srv, "dr-all").await; // every sensitivity, clearance V
    assert_outcome(get_as(&srv, &all, "Observation/unknown").await, StatusCode::NOT_FOUND).await;
    assert!(!has(&ids_as(&srv, &all, "Observation?subject=Patient/ann").await, "Observation/unknown"));
    assert!(!has(
        &ids_as(&srv, &all, "Observation?_security=http://example.org/our-labels|secret").await,
        "Observation/unknown"
    ));
    // A label admin sees it, to correct it.
    assert_eq!(srv.get("Observation/unknown").await.status(), StatusCode::OK);
});

backends_from!(handling_caveats_travel_with_the_resource, labels_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await;
    let r = body(get_as(&srv, &plain, "Observation/low").await).await;
    let codes: Vec<&str> =
        r["meta"]["security"].as_array().unwrap().iter().map(|l| l["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"NORDSCLCD") && codes.contains(&"L"), "{codes:?}");
    let b = body(get_as(&srv, &plain, "Observation?_id=low").await).await;
    assert_eq!(b["entry"][0]["resource"]["meta"]["security"], r["meta"]["security"]);
});

backends_from!(bundle_carries_the_highest_confidentiality_and_no_sensitivity, labels_server, |srv| {
    let psych = user_token(&srv, "dr-psych").await;
    let plain = user_token(&srv, "dr-plain").await;
    let mark = |b: &Value| b["meta"]["security"].clone();
    let psych_search = body(get_as(&srv, &psych, "Observation?subject=Patient/ann").await).await;
    assert_eq!(mark(&psych_search), json!([{"system": CONF, "code": "R", "display": "restricted"}]));
    let plain_search = body(get_as(&srv, &plain, "Observation?subject=Patient/ann").await).await;
    assert_eq!(mark(&plain_search)[0]["code"], "N", "unlabelled entries count as N");
    let low = body(get_as(&srv, &plain, "Observation?_id=low").await).await;
    assert_eq!(mark(&low), json!([{"system": CONF, "code": "L", "display": "low"}]), "no caveat, no sensitivity");
    let psy_only = body(get_as(&srv, &psych, "Observation?_id=psy").await).await;
    assert_eq!(mark(&psy_only)[0]["code"], "N");
    assert_eq!(mark(&psy_only).as_array().unwrap().len(), 1, "PSY is never copied to the Bundle");
    let history = body(get_as(&srv, &psych, "Observation/restricted/_history").await).await;
    assert_eq!(mark(&history)[0]["code"], "R");
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/low"}},
        {"request": {"method": "GET", "url": "Observation/restricted"}}
    ]});
    let r = body(srv.send_as(&psych, "POST", "", Some(batch)).await).await;
    assert_eq!(r["type"], "batch-response");
    assert_eq!(mark(&r)[0]["code"], "R");
    let empty = body(get_as(&srv, &plain, "Observation?_id=nothing-here").await).await;
    assert_eq!(mark(&empty)[0]["code"], "U");
});

backends_from!(test_data_is_left_out_of_searches_unless_asked_for, labels_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await;
    assert!(!has(&ids_as(&srv, &plain, "Observation?subject=Patient/ann").await, "Observation/test"));
    assert!(!has(&srv_ids(&srv, "Observation?subject=Patient/ann").await, "Observation/test"), "the admin too");
    let asked = ids_as(&srv, &plain, &format!("Observation?subject=Patient/ann&_security={ACT_REASON}|HTEST")).await;
    assert_eq!(asked, vec!["Observation/test".to_string()]);
    assert_eq!(get_as(&srv, &plain, "Observation/test").await.status(), StatusCode::OK, "a read is not a search");
});

async fn srv_ids(srv: &Server, path: &str) -> Vec<String> {
    entry_refs(&body(srv.get(path).await).await)
}

fn security_codes(r: &Value) -> Vec<String> {
    let mut codes: Vec<String> = r["meta"]["security"]
        .as_array()
        .map(|a| a.iter().map(|l| l["code"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    codes.sort();
    codes
}

backends_from!(plain_put_cannot_remove_or_lower_a_label, labels_server, |srv| {
    let psych = user_token(&srv, "dr-psych").await;
    // Without the labels, then with a lower confidentiality.
    let r = srv.send_as(&psych, "PUT", "Observation/restricted", Some(labelled("restricted", &[]))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(security_codes(&body(srv.get("Observation/restricted").await).await), vec!["R"]);
    assert!(srv.log_lines_with(&["labels-changed", "Observation/restricted"]).await.is_empty(), "nothing changed");
    let r = srv.send_as(&psych, "PUT", "Observation/restricted", Some(labelled("restricted", &[(CONF, "N")]))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(security_codes(&body(srv.get("Observation/restricted").await).await), vec!["R"]);
    let r = srv.send_as(&psych, "PUT", "Observation/psy", Some(labelled("psy", &[]))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(security_codes(&body(srv.get("Observation/psy").await).await), vec!["PSY"]);
});

backends_from!(plain_patch_cannot_remove_a_label, labels_server, |srv| {
    let psych = user_token(&srv, "dr-psych").await;
    let patch = json!([{"op": "remove", "path": "/meta/security"}]);
    let r = patch_as(&srv, &psych, "Observation/psy", &patch).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(security_codes(&body(srv.get("Observation/psy").await).await), vec!["PSY"]);
});

backends_from!(plain_write_may_add_a_label_or_raise_the_confidentiality, labels_server, |srv| {
    let psych = user_token(&srv, "dr-psych").await;
    let r = srv.send_as(&psych, "PUT", "Observation/low", Some(labelled("low", &[(CONF, "R")]))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(security_codes(&body(srv.get("Observation/low").await).await), vec!["NORDSCLCD", "R"]);
});

backends_from!(label_admin_may_change_and_remove_labels, labels_server, |srv| {
    // The harness's admin holds label_admin.
    let r = srv.put("Observation/restricted", &labelled("restricted", &[(CONF, "N")])).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(security_codes(&body(srv.get("Observation/restricted").await).await), vec!["N"]);
    // The change is recorded: what, by whom, before and after.
    let events = srv.log_lines_with(&["labels-changed", "Observation/restricted", "blackbox-admin"]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("v3-Confidentiality|R") && events[0].contains("v3-Confidentiality|N"), "{}", events[0]);
    let plain = user_token(&srv, "dr-plain").await;
    assert_eq!(get_as(&srv, &plain, "Observation/restricted").await.status(), StatusCode::OK, "now visible");
});

backends_from!(hidden_resource_cannot_be_overwritten_or_deleted, labels_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await;
    let r = srv.send_as(&plain, "PUT", "Observation/psy", Some(labelled("psy", &[]))).await;
    assert_outcome(r, StatusCode::NOT_FOUND).await;
    assert_outcome(srv.send_as(&plain, "DELETE", "Observation/psy", None).await, StatusCode::NOT_FOUND).await;
    assert_eq!(security_codes(&body(srv.get("Observation/psy").await).await), vec!["PSY"], "nothing lost");
});

backends_from!(clinician_may_create_what_its_labels_then_hide, labels_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await;
    let r = srv.send_as(&plain, "POST", "Observation", Some(labelled("x", &[(ACT_CODE, "PSY")]))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = body(r).await["id"].as_str().unwrap().to_string();
    assert_outcome(get_as(&srv, &plain, &format!("Observation/{id}")).await, StatusCode::NOT_FOUND).await;
    assert_eq!(srv.get(&format!("Observation/{id}")).await.status(), StatusCode::OK);
});

backends_from!(break_the_glass_reveals_sensitive_and_restricted_but_not_very_restricted, labels_server, |srv| {
    let er = user_token(&srv, "dr-er").await;
    assert_outcome(get_as(&srv, &er, "Observation/psy").await, StatusCode::NOT_FOUND).await;
    let glass = btg_token(&srv, "dr-er").await;
    assert_eq!(get_as(&srv, &glass, "Observation/psy").await.status(), StatusCode::OK);
    assert_eq!(get_as(&srv, &glass, "Observation/restricted").await.status(), StatusCode::OK);
    assert_outcome(get_as(&srv, &glass, "Observation/very").await, StatusCode::NOT_FOUND).await;
    assert_outcome(get_as(&srv, &glass, "Observation/unknown").await, StatusCode::NOT_FOUND).await;
    // Every request under it is recorded as an emergency override, without the token.
    let events = srv.log_lines_with(&["emergency-access", "Observation/psy"]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(!events[0].contains(&glass), "the token is never logged");
    assert_eq!(srv.log_lines_with(&["emergency-access"]).await.len(), 4, "one per request under BTG");
});

fn depression(id: &str) -> Value {
    json!({"resourceType": "Condition", "id": id,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007", "display": "Depressive disorder"}]},
        "subject": {"reference": "Patient/ann"}})
}

backends_from!(labelling_service_labels_sensitive_content_on_write, labels_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await;
    let r = srv.send_as(&plain, "POST", "Condition", Some(depression("x"))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = body(r).await["id"].as_str().unwrap().to_string();
    let stored = body(srv.get(&format!("Condition/{id}")).await).await;
    assert_eq!(security_codes(&stored), vec!["PSY", "R"]);
    // The clinician who wrote it no longer sees it; the psychiatrist does.
    assert_outcome(get_as(&srv, &plain, &format!("Condition/{id}")).await, StatusCode::NOT_FOUND).await;
    let psych = user_token(&srv, "dr-psych").await;
    assert_eq!(get_as(&srv, &psych, &format!("Condition/{id}")).await.status(), StatusCode::OK);
    // Content the rules do not name is left alone.
    let mut other = depression("y");
    other["code"]["coding"][0]["code"] = json!("38341003");
    let r = srv
        .send_as(
            &plain,
            "PUT",
            "Condition/other",
            Some({
                other["id"] = json!("other");
                other
            }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(security_codes(&body(srv.get("Condition/other").await).await).is_empty());
});

backends_from!(labelling_service_labels_an_update_that_turns_sensitive, labels_server, |srv| {
    let psych = user_token(&srv, "dr-psych").await;
    let mut c = depression("later");
    c["code"]["coding"][0]["code"] = json!("38341003");
    assert_eq!(srv.send_as(&psych, "PUT", "Condition/later", Some(c)).await.status(), StatusCode::CREATED);
    assert!(security_codes(&body(srv.get("Condition/later").await).await).is_empty());
    let patch = json!([{"op": "replace", "path": "/code/coding/0/code", "value": "35489007"}]);
    let r = patch_as(&srv, &psych, "Condition/later", &patch).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(security_codes(&body(srv.get("Condition/later").await).await), vec!["PSY", "R"]);
});

const INLINE: &str = "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label";

/// A Patient whose second name is restricted and whose birth date is psychiatry-sensitive,
/// labelled inline.
fn inline_patient() -> Value {
    json!({"resourceType": "Patient", "id": "inline",
        "meta": {"security": [{"system": ACT_CODE, "code": "PROCESSINLINELABEL"}]},
        "name": [{"family": "Known"},
                 {"family": "Former", "extension": [{"url": INLINE, "valueCoding": {"system": CONF, "code": "R"}}]}],
        "birthDate": "1970-01-01",
        "_birthDate": {"extension": [{"url": INLINE, "valueCoding": {"system": ACT_CODE, "code": "PSY"}}]},
        "telecom": [{"system": "phone", "value": "555-0100"}],
        "gender": "other"})
}

fn marks(r: &Value) -> Vec<String> {
    r["meta"]["security"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| l["system"] == "http://terminology.hl7.org/CodeSystem/v3-ObservationValue")
                .map(|l| l["code"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

backends_from!(inline_labelled_elements_are_removed_and_the_copy_marked_redacted, labels_server, |srv| {
    assert!(srv.put("Patient/inline", &inline_patient()).await.status().is_success());
    let plain = user_token(&srv, "dr-plain").await;
    let r = body(get_as(&srv, &plain, "Patient/inline").await).await;
    assert_eq!(r["name"], json!([{"family": "Known"}]), "the restricted name is gone");
    assert!(r.get("birthDate").is_none() && r.get("_birthDate").is_none(), "the PSY birth date is gone");
    assert!(!r.to_string().contains("Former") && !r.to_string().contains("1970"), "{r}");
    assert_eq!(r["gender"], "other");
    assert_eq!(marks(&r), vec!["REDACTED"]);
    // The same on every path.
    let b = body(get_as(&srv, &plain, "Patient?_id=inline").await).await;
    assert_eq!(b["entry"][0]["resource"], r);
    let h = body(get_as(&srv, &plain, "Patient/inline/_history").await).await;
    assert!(!h.to_string().contains("Former"), "history is redacted too");
    // Whoever may see everything gets the record, unmarked.
    let all = user_token(&srv, "dr-all").await;
    let full = body(get_as(&srv, &all, "Patient/inline").await).await;
    assert_eq!(full["name"].as_array().unwrap().len(), 2);
    assert_eq!(full["birthDate"], "1970-01-01");
    assert!(marks(&full).is_empty());
});

backends_from!(redacted_copy_cannot_overwrite_the_record, labels_server, |srv| {
    assert!(srv.put("Patient/inline", &inline_patient()).await.status().is_success());
    let plain = user_token(&srv, "dr-plain").await;
    let copy = body(get_as(&srv, &plain, "Patient/inline").await).await;
    let outcome = assert_outcome(
        srv.send_as(&plain, "PUT", "Patient/inline", Some(copy)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(outcome.to_string().contains("meta.security"), "{outcome}");
    let stored = body(srv.get("Patient/inline").await).await;
    assert_eq!(stored["name"].as_array().unwrap().len(), 2, "nothing lost");
});

backends_from!(masking_rule_masks_contact_details_for_its_roles, labels_server, |srv| {
    assert!(srv.put("Patient/inline", &inline_patient()).await.status().is_success());
    let desk =
        tokens_for(&srv, "openid fhirUser user/Patient.rs", "desk").await["access_token"].as_str().unwrap().to_string();
    let r = body(get_as(&srv, &desk, "Patient/inline").await).await;
    assert!(!r.to_string().contains("555-0100"), "{r}");
    assert_eq!(r["telecom"][0]["extension"][0]["valueCode"], "masked");
    let mut m = marks(&r);
    m.sort();
    assert_eq!(m, vec!["MASKED", "REDACTED"]);
    // A clinician is not masked.
    let plain = user_token(&srv, "dr-plain").await;
    let r = body(get_as(&srv, &plain, "Patient/inline").await).await;
    assert_eq!(r["telecom"][0]["value"], "555-0100");
});

/// The same deployment, telling users who may break the glass when it would reveal more.
async fn hinting_server(backend: Backend) -> Option<Server> {
    let srv = Server::start_with(backend, &format!("{}\n[privacy]\nhint_break_glass = true\n", labels_toml())).await?;
    seed(&srv).await;
    for o in [labelled("plain", &[]), labelled("psy", &[(ACT_CODE, "PSY")])] {
        let id = o["id"].as_str().unwrap().to_string();
        assert!(srv.put(&format!("Observation/{id}"), &o).await.status().is_success());
    }
    Some(srv)
}

fn has_break_glass_hint(outcome: &Value) -> bool {
    outcome["issue"].as_array().is_some_and(|issues| {
        issues.iter().any(|i| i["code"] == "suppressed" && i["details"]["coding"][0]["code"] == "ETREAT")
    })
}

backends_from!(withheld_data_is_hinted_to_users_who_may_break_the_glass, hinting_server, |srv| {
    let er = user_token(&srv, "dr-er").await;
    let outcome = assert_outcome(get_as(&srv, &er, "Observation/psy").await, StatusCode::NOT_FOUND).await;
    assert!(has_break_glass_hint(&outcome), "{outcome}");
    let b = body(get_as(&srv, &er, "Observation?subject=Patient/ann").await).await;
    let outcomes: Vec<&Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "outcome")
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(outcomes.len(), 1, "{b}");
    assert!(has_break_glass_hint(outcomes[0]));
    assert_eq!(b["total"], 1, "the total counts what was returned");
    // Nothing withheld, no hint.
    let b = body(get_as(&srv, &er, "Observation?_id=plain").await).await;
    assert!(!b.to_string().contains("suppressed"), "{b}");
    let outcome = assert_outcome(get_as(&srv, &er, "Observation/missing").await, StatusCode::NOT_FOUND).await;
    assert!(!has_break_glass_hint(&outcome), "a missing resource is not withheld");
});

backends_from!(withheld_data_is_not_hinted_to_users_who_may_not_break_the_glass, hinting_server, |srv| {
    let plain = user_token(&srv, "dr-plain").await;
    let outcome = assert_outcome(get_as(&srv, &plain, "Observation/psy").await, StatusCode::NOT_FOUND).await;
    assert!(!has_break_glass_hint(&outcome));
    let b = body(get_as(&srv, &plain, "Observation?subject=Patient/ann").await).await;
    assert!(!b.to_string().contains("suppressed"));
});

backends_from!(withheld_data_is_not_hinted_unless_the_deployment_says_so, labels_server, |srv| {
    let er = user_token(&srv, "dr-er").await;
    let outcome = assert_outcome(get_as(&srv, &er, "Observation/psy").await, StatusCode::NOT_FOUND).await;
    assert!(!has_break_glass_hint(&outcome));
});

backends_from!(conditional_create_does_not_reveal_a_hidden_match, labels_server, |srv| {
    let mut hidden = labelled("psy-tagged", &[(ACT_CODE, "PSY")]);
    hidden["identifier"] = json!([{"system": "urn:test", "value": "x-1"}]);
    assert!(srv.put("Observation/psy-tagged", &hidden).await.status().is_success());
    let plain = user_token(&srv, "dr-plain").await;
    let mut mine = labelled("ignored", &[]);
    mine.as_object_mut().unwrap().remove("id");
    mine["identifier"] = json!([{"system": "urn:test", "value": "x-1"}]);
    let r = srv
        .anonymous()
        .post(srv.url("Observation"))
        .bearer_auth(&plain)
        .header("Content-Type", "application/fhir+json")
        .header("If-None-Exist", "identifier=urn:test|x-1")
        .body(mine.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "the hidden match is absent for this caller");
    let created = body(r).await;
    assert_ne!(created["id"], "psy-tagged");
    assert!(!created.to_string().contains("PSY"), "{created}");
});

backends_from!(client_clearance_caps_what_its_users_see, labels_server, |srv| {
    // dr-psych's clearance is R; through an app whose clearance is N, R is out of reach.
    let direct = user_token(&srv, "dr-psych").await;
    assert_eq!(get_as(&srv, &direct, "Observation/restricted").await.status(), StatusCode::OK);
    let mut a = Authorize::new(&srv, "openid fhirUser user/*.cruds");
    a.client = CAPPED_APP.into();
    a.redirect = CAPPED_REDIRECT.into();
    let code = code_for(&srv, &a, "dr-psych").await;
    let r = exchange(&srv, &code, &[("client_id", CAPPED_APP), ("redirect_uri", CAPPED_REDIRECT)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let capped = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    assert_outcome(get_as(&srv, &capped, "Observation/restricted").await, StatusCode::NOT_FOUND).await;
    assert_eq!(get_as(&srv, &capped, "Observation/psy").await.status(), StatusCode::OK, "roles still apply");
});
