//! Attribute rules (`[[rules]]`) over HTTP: clinicians confined to the records created within
//! their own organization (the server stamps the organization; clients cannot forge, move or
//! remove it), deny rules beating allow rules, rules applied on every read path. One test per
//! attack, on both backends.

use crate::backends_from;
use crate::harness::*;
use crate::smart::{Authorize, Browser, PASSWORD, seed, smart_toml, tokens_for};

const ORG_TAG: &str = "urn:bastion:creating-organization";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// Two clinicians of two organizations, a rule that confines clinicians to their own
/// organization's Observations and Conditions, a deny rule on PSY-labelled records for
/// reading, and one that forbids deleting Conditions.
fn rules_toml() -> String {
    let hash = bastion_auth::secret::hash_password(PASSWORD).unwrap();
    format!(
        r#"{base}
[[users]]
username = "dr-x"
password = "{hash}"
fhir_user = "Practitioner/dr-x"
roles = ["clinician"]
organization = "Organization/x"

[[users]]
username = "dr-y"
password = "{hash}"
fhir_user = "Practitioner/dr-y"
roles = ["clinician"]
organization = "Organization/y"

[[users]]
username = "dr-ward"
password = "{hash}"
fhir_user = "Practitioner/dr-ward"
roles = ["clinician", "ward-a"]
organization = "Organization/x"

[[roles]]
name = "ward-a"
permissions = []

[[rules]]
name = "ward-a-patients"
effect = "allow"
roles = ["ward-a"]
types = ["Patient"]
patients = ["Patient/ann"]

[[rules]]
name = "own-organization"
effect = "allow"
roles = ["clinician"]
types = ["Observation", "Condition"]
organization = "same"

[[rules]]
name = "no-psychiatry-notes"
effect = "deny"
roles = ["clinician"]
actions = "rs"
security = ["{ACT_CODE}|PSY"]

[[rules]]
name = "conditions-are-never-deleted"
effect = "deny"
types = ["Condition"]
actions = "d"
"#,
        base = smart_toml()
    )
}

/// The deployment of these tests, seeded.
async fn rules_server(backend: Backend) -> Option<Server> {
    let srv = Server::start_with(backend, &rules_toml()).await?;
    seed(&srv).await;
    Some(srv)
}

async fn clinician(srv: &Server, user: &str) -> String {
    tokens_for(srv, "openid fhirUser user/*.cruds", user).await["access_token"].as_str().unwrap().to_string()
}

fn weight(patient: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "subject": {"reference": format!("Patient/{patient}")}})
}

/// Creates an Observation as `token`'s caller; its id.
async fn create(srv: &Server, token: &str, resource: Value) -> String {
    let r = srv.send_as(token, "POST", "Observation", Some(resource)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await["id"].as_str().unwrap().to_string()
}

/// The organization tags the server holds for a stored Observation (read without restriction).
async fn stamps(srv: &Server, id: &str) -> Vec<String> {
    let r = body(srv.get(&format!("Observation/{id}")).await).await;
    r["meta"]["tag"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter(|t| t["system"] == ORG_TAG)
                .map(|t| t["code"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn ids(bundle: &Value) -> Vec<String> {
    let mut out = entry_refs(bundle);
    out.sort();
    out
}

backends_from!(clinician_sees_only_records_created_within_their_own_organization, rules_server, |srv| {
    let (x, y) = (clinician(&srv, "dr-x").await, clinician(&srv, "dr-y").await);
    let mine = create(&srv, &x, weight("ann")).await;
    let theirs = create(&srv, &y, weight("ann")).await;
    assert_eq!(stamps(&srv, &mine).await, vec!["Organization/x"]);
    assert_eq!(srv.send_as(&x, "GET", &format!("Observation/{mine}"), None).await.status(), StatusCode::OK);
    let hidden = srv.send_as(&x, "GET", &format!("Observation/{theirs}"), None).await;
    let missing = srv.send_as(&x, "GET", "Observation/no-such-observation", None).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let (h, m) = (body(hidden).await, body(missing).await);
    assert_eq!(h["issue"][0]["code"], m["issue"][0]["code"], "a hidden record reads like a missing one");
    let found = body(srv.send_as(&x, "GET", "Observation?subject=Patient/ann", None).await).await;
    assert_eq!(ids(&found), vec![format!("Observation/{mine}")]);
    assert_eq!(found["total"], 1, "the total counts only what the caller may see");
});

backends_from!(records_without_an_organization_are_hidden_from_confined_clinicians, rules_server, |srv| {
    let x = clinician(&srv, "dr-x").await;
    let untagged = body(srv.post("Observation", &weight("ann")).await).await["id"].as_str().unwrap().to_string();
    assert!(stamps(&srv, &untagged).await.is_empty(), "written by a backend client without an organization");
    assert_eq!(srv.send_as(&x, "GET", &format!("Observation/{untagged}"), None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        srv.send_as(&x, "GET", "Patient/ann", None).await.status(),
        StatusCode::OK,
        "other types are not confined"
    );
});

backends_from!(forged_organization_tag_on_create_is_replaced_by_the_callers, rules_server, |srv| {
    let (x, y) = (clinician(&srv, "dr-x").await, clinician(&srv, "dr-y").await);
    let mut forged = weight("ann");
    forged["meta"] = json!({"tag": [{"system": ORG_TAG, "code": "Organization/x"}, {"system": "http://example.org/t", "code": "keep"}]});
    let id = create(&srv, &y, forged).await;
    assert_eq!(stamps(&srv, &id).await, vec!["Organization/y"]);
    let stored = body(srv.get(&format!("Observation/{id}")).await).await;
    assert!(
        stored["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "keep"),
        "other tags are the client's"
    );
    assert_eq!(srv.send_as(&x, "GET", &format!("Observation/{id}"), None).await.status(), StatusCode::NOT_FOUND);
});

backends_from!(forged_organization_tag_by_a_client_without_an_organization_is_dropped, rules_server, |srv| {
    let x = clinician(&srv, "dr-x").await;
    let mut forged = weight("ann");
    forged["meta"] = json!({"tag": [{"system": ORG_TAG, "code": "Organization/x"}]});
    let id = body(srv.post("Observation", &forged).await).await["id"].as_str().unwrap().to_string();
    assert!(stamps(&srv, &id).await.is_empty());
    assert_eq!(srv.send_as(&x, "GET", &format!("Observation/{id}"), None).await.status(), StatusCode::NOT_FOUND);
});

backends_from!(update_cannot_move_or_remove_the_organization_tag, rules_server, |srv| {
    let x = clinician(&srv, "dr-x").await;
    let id = create(&srv, &x, weight("ann")).await;
    let mut moved = weight("ann");
    moved["id"] = json!(id);
    moved["meta"] = json!({"tag": [{"system": ORG_TAG, "code": "Organization/y"}]});
    assert_eq!(srv.send_as(&x, "PUT", &format!("Observation/{id}"), Some(moved)).await.status(), StatusCode::OK);
    assert_eq!(stamps(&srv, &id).await, vec!["Organization/x"], "a PUT keeps the creating organization");
    let strip = json!([{"op": "remove", "path": "/meta/tag"}]);
    assert_eq!(srv.send_as(&x, "PATCH", &format!("Observation/{id}"), Some(strip)).await.status(), StatusCode::OK);
    assert_eq!(stamps(&srv, &id).await, vec!["Organization/x"], "a PATCH cannot remove it");
    let mut untagged = weight("bob");
    untagged["id"] = json!(id);
    assert_eq!(srv.send_as(&x, "PUT", &format!("Observation/{id}"), Some(untagged)).await.status(), StatusCode::OK);
    assert_eq!(stamps(&srv, &id).await, vec!["Organization/x"], "a body without meta keeps it too");
});

backends_from!(clinician_cannot_update_patch_or_delete_another_organizations_record, rules_server, |srv| {
    let (x, y) = (clinician(&srv, "dr-x").await, clinician(&srv, "dr-y").await);
    let theirs = create(&srv, &y, weight("ann")).await;
    let mut changed = weight("bob");
    changed["id"] = json!(theirs);
    let path = format!("Observation/{theirs}");
    assert_outcome(srv.send_as(&x, "PUT", &path, Some(changed)).await, StatusCode::NOT_FOUND).await;
    let patch = json!([{"op": "replace", "path": "/status", "value": "cancelled"}]);
    assert_outcome(srv.send_as(&x, "PATCH", &path, Some(patch)).await, StatusCode::NOT_FOUND).await;
    assert_outcome(srv.send_as(&x, "DELETE", &path, None).await, StatusCode::NOT_FOUND).await;
    let stored = body(srv.get(&path).await).await;
    assert_eq!(stored["meta"]["versionId"], "1", "nothing changed");
    assert_eq!(stored["subject"]["reference"], "Patient/ann");
});

backends_from!(conditional_update_does_not_match_another_organizations_record, rules_server, |srv| {
    let (x, y) = (clinician(&srv, "dr-x").await, clinician(&srv, "dr-y").await);
    let mut theirs = weight("ann");
    theirs["identifier"] = json!([{"system": "http://example.org/obs", "value": "o-1"}]);
    let id = create(&srv, &y, theirs.clone()).await;
    let r = srv.send_as(&x, "PUT", "Observation?identifier=http://example.org/obs|o-1", Some(theirs)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "the hidden match is not seen: a new record of dr-x's own");
    let created = body(r).await["id"].as_str().unwrap().to_string();
    assert_ne!(created, id);
    assert_eq!(body(srv.get(&format!("Observation/{id}")).await).await["meta"]["versionId"], "1");
});

backends_from!(deny_rule_beats_allow_rule_on_a_labelled_record_of_ones_own_organization, rules_server, |srv| {
    let x = clinician(&srv, "dr-x").await;
    let mut psy = weight("ann");
    psy["meta"] = json!({"security": [{"system": ACT_CODE, "code": "PSY"}]});
    let id = create(&srv, &x, psy).await;
    assert_eq!(stamps(&srv, &id).await, vec!["Organization/x"]);
    assert_outcome(srv.send_as(&x, "GET", &format!("Observation/{id}"), None).await, StatusCode::NOT_FOUND).await;
    let found = body(srv.send_as(&x, "GET", "Observation?subject=Patient/ann", None).await).await;
    assert_eq!(found["total"], 0);
    let by_label = body(srv.send_as(&x, "GET", &format!("Observation?_security={ACT_CODE}|PSY"), None).await).await;
    assert_eq!(by_label["total"], 0, "searching for the label is no oracle");
});

backends_from!(deny_rule_without_condition_refuses_the_interaction_with_403, rules_server, |srv| {
    let x = clinician(&srv, "dr-x").await;
    let c = json!({"resourceType": "Condition", "subject": {"reference": "Patient/ann"}, "code": {"text": "asthma"}});
    let r = srv.send_as(&x, "POST", "Condition", Some(c)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = body(r).await["id"].as_str().unwrap().to_string();
    let r = srv.send_as(&x, "DELETE", &format!("Condition/{id}"), None).await;
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    assert_outcome(r, StatusCode::FORBIDDEN).await;
    assert_eq!(srv.get(&format!("Condition/{id}")).await.status(), StatusCode::OK, "not deleted");
});

backends_from!(revinclude_and_system_search_apply_the_rules_to_each_type, rules_server, |srv| {
    let (x, y) = (clinician(&srv, "dr-x").await, clinician(&srv, "dr-y").await);
    let mine = create(&srv, &x, weight("ann")).await;
    create(&srv, &y, weight("ann")).await;
    create(&srv, &y, weight("bob")).await;
    let b = body(srv.send_as(&x, "GET", "Patient?_id=ann&_revinclude=Observation:subject", None).await).await;
    assert_eq!(ids(&b), vec![format!("Observation/{mine}"), "Patient/ann".to_string()]);
    let b = body(srv.send_as(&x, "GET", "?_type=Observation,Patient", None).await).await;
    assert_eq!(ids(&b), vec![format!("Observation/{mine}"), "Patient/ann".into(), "Patient/bob".into()]);
    let b = body(srv.send_as(&x, "GET", "Patient?_has:Observation:subject:status=final", None).await).await;
    assert_eq!(ids(&b), vec!["Patient/ann".to_string()], "_has matches only through visible records, not bob's");
});

backends_from!(history_of_another_organizations_record_is_hidden, rules_server, |srv| {
    let (x, y) = (clinician(&srv, "dr-x").await, clinician(&srv, "dr-y").await);
    let theirs = create(&srv, &y, weight("ann")).await;
    assert_outcome(
        srv.send_as(&x, "GET", &format!("Observation/{theirs}/_history"), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let b = body(srv.send_as(&x, "GET", "Observation/_history", None).await).await;
    assert!(ids(&b).is_empty(), "{b}");
});

#[test]
fn rule_with_an_unknown_effect_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("bastion-rules-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bastion.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/b.db\"\n[[rules]]\nname = \"r1\"\neffect = \"permit\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bastion"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rule r1") && stderr.contains("allow"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

backends_from!(clinician_cannot_point_a_record_at_another_organizations_record, rules_server, |srv| {
    let (x, y) = (clinician(&srv, "dr-x").await, clinician(&srv, "dr-y").await);
    let theirs = create(&srv, &y, weight("ann")).await;
    let mut o = weight("ann");
    o["derivedFrom"] = json!([{"reference": format!("Observation/{theirs}")}]);
    assert_outcome(srv.send_as(&x, "POST", "Observation", Some(o)).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    let mut dangling = weight("ann");
    dangling["derivedFrom"] = json!([{"reference": "Observation/no-such-observation"}]);
    assert_outcome(srv.send_as(&x, "POST", "Observation", Some(dangling)).await, StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    let mine = create(&srv, &x, weight("ann")).await;
    let mut o = weight("ann");
    o["derivedFrom"] = json!([{"reference": format!("Observation/{mine}")}]);
    assert_eq!(srv.send_as(&x, "POST", "Observation", Some(o)).await.status(), StatusCode::CREATED);
});

backends_from!(patient_chooser_offers_only_the_patients_the_rules_let_the_user_reach, rules_server, |srv| {
    let a = Authorize::new(&srv, "launch/patient openid fhirUser patient/Patient.rs");
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("dr-ward", PASSWORD).await;
    let f = b.form();
    assert_eq!(f.patients, vec!["ann".to_string()], "bob is outside the ward's patients");
    let mut fields: Vec<(String, String)> =
        f.scopes.iter().filter(|(_, c)| *c).map(|(v, _)| ("scope".to_string(), v.clone())).collect();
    fields.push(("patient".into(), "bob".into()));
    fields.push(("decision".into(), "approve".into()));
    b.submit("consent", fields).await;
    let back = b.redirect_params();
    assert_eq!(back["error"], "invalid_request", "a patient outside the user's reach is refused like a missing one");
    assert!(!back.contains_key("code"));
});

backends_from!(ehr_launch_of_a_patient_outside_the_users_reach_is_refused, rules_server, |srv| {
    let t =
        tokens_for(&srv, "openid fhirUser user/*.rs", "dr-ward").await["access_token"].as_str().unwrap().to_string();
    let launch = |patient: &str| {
        let (srv, t) = (&srv, &t);
        let body = json!({"patient": patient}).to_string();
        async move {
            srv.anonymous()
                .post(format!("{}/auth/launch", srv.root))
                .bearer_auth(t)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(launch("ann").await.status(), StatusCode::OK);
    let outside = launch("bob").await;
    let missing = launch("nobody").await;
    assert_eq!(outside.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(outside).await, body(missing).await);
});
