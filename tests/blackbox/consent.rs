//! Patient Consent over HTTP (issue 6, point 7): an active patient-privacy Consent narrows
//! every caller's reach into that patient's record on the next request (read, search,
//! include, history, `$everything`, writes), its exceptions and their exceptions apply
//! (actors by reference and through CareTeams, security labels, purposes), it stops
//! applying when it is no longer active, break the glass overrides it, and an opt-in
//! deployment shares nothing of a patient without a permit. Both backends.

use crate::backends_from;
use crate::harness::*;
use crate::smart::{Authorize, Browser, PASSWORD, code_for, exchange, seed, smart_toml, tokens_for};

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";

fn consent_toml(base: &str) -> String {
    let hash = bastion_auth::secret::hash_password(PASSWORD).unwrap();
    format!(
        r#"{smart}
[privacy]
consent_base = "{base}"

[[users]]
username = "dr-a"
password = "{hash}"
fhir_user = "Practitioner/dr-a"
roles = ["psy-clinician"]
organization = "Organization/general"

[[users]]
username = "dr-b"
password = "{hash}"
fhir_user = "Practitioner/dr-b"
roles = ["psy-clinician"]
organization = "Organization/general"
break_glass = true

[[roles]]
name = "psy-clinician"
permissions = ["user/*.cruds"]
sensitivity = ["PSY"]
"#,
        smart = smart_toml()
    )
}

async fn seeded(srv: &Server) {
    seed(srv).await;
    for (id, labels) in [("ann-weight", vec![]), ("ann-psy", vec![(ACT_CODE, "PSY")])] {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": id},
            "subject": {"reference": "Patient/ann"}});
        if !labels.is_empty() {
            let security: Vec<Value> = labels.iter().map(|(s, c)| json!({"system": s, "code": c})).collect();
            o["meta"] = json!({"security": security});
        }
        assert!(srv.put(&format!("Observation/{id}"), &o).await.status().is_success());
    }
    let o = json!({"resourceType": "Observation", "id": "bob-weight", "status": "final", "code": {"text": "w"},
        "subject": {"reference": "Patient/bob"}});
    assert!(srv.put("Observation/bob-weight", &o).await.status().is_success());
}

async fn opt_out_server(backend: Backend) -> Option<Server> {
    let srv = Server::start_with(backend, &consent_toml("opt-out")).await?;
    seeded(&srv).await;
    Some(srv)
}

async fn opt_in_server(backend: Backend) -> Option<Server> {
    let srv = Server::start_with(backend, &consent_toml("opt-in")).await?;
    seeded(&srv).await;
    Some(srv)
}

fn consent(id: &str, patient: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")}, "dateTime": "2026-01-10",
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]},
        "provision": provision})
}

fn deny_actor(reference: &str) -> Value {
    json!({"type": "permit", "provision": [{"type": "deny",
        "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                   "reference": {"reference": reference}}]}]})
}

async fn put_consent(srv: &Server, c: &Value) {
    let id = c["id"].as_str().unwrap();
    let r = srv.put(&format!("Consent/{id}"), c).await;
    assert!(r.status().is_success(), "{}", r.status());
}

async fn user(srv: &Server, name: &str) -> String {
    tokens_for(srv, "openid fhirUser user/*.cruds", name).await["access_token"].as_str().unwrap().to_string()
}

async fn status(srv: &Server, token: &str, path: &str) -> StatusCode {
    srv.send_as(token, "GET", path, None).await.status()
}

async fn ids(srv: &Server, token: &str, path: &str) -> Vec<String> {
    let r = srv.send_as(token, "GET", path, None).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let mut ids = entry_refs(&body(r).await);
    ids.sort();
    ids
}

backends_from!(consent_denying_a_practitioner_takes_effect_on_the_next_request, opt_out_server, |srv| {
    let a = user(&srv, "dr-a").await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::OK);
    put_consent(&srv, &consent("c1", "ann", deny_actor("Practitioner/dr-a"))).await;
    // The same token, the next request.
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::NOT_FOUND);
    // The decision is recorded: who, and whose record.
    assert_eq!(srv.log_lines_with(&["consent-restricts", "dr-a", "ann"]).await.len(), 1);
    assert_eq!(status(&srv, &a, "Patient/ann").await, StatusCode::NOT_FOUND);
    assert_eq!(status(&srv, &a, "Observation/ann-weight/_history").await, StatusCode::NOT_FOUND);
    assert_eq!(status(&srv, &a, "Patient/ann/$everything").await, StatusCode::NOT_FOUND);
    for path in [
        "Observation",
        "Observation?subject=Patient/ann",
        "Patient",
        "Observation?_id=bob-weight&_include=Observation:subject",
        "Observation/_history",
    ] {
        let found = ids(&srv, &a, path).await;
        assert!(!found.iter().any(|i| i == "Observation/ann-weight" || i == "Patient/ann"), "{path}: {found:?}");
    }
    // Bob's record and other practitioners are untouched.
    assert!(ids(&srv, &a, "Observation").await.contains(&"Observation/bob-weight".to_string()));
    let b = user(&srv, "dr-b").await;
    assert_eq!(status(&srv, &b, "Observation/ann-weight").await, StatusCode::OK);
    // The patient still reads her own record.
    let ann =
        tokens_for(&srv, "launch/patient patient/*.rs", "ann").await["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&srv, &ann, "Observation/ann-weight").await, StatusCode::OK);
});

backends_from!(consent_denying_an_organization_denies_its_members, opt_out_server, |srv| {
    put_consent(&srv, &consent("c1", "ann", deny_actor("Organization/general"))).await;
    let a = user(&srv, "dr-a").await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::NOT_FOUND);
});

backends_from!(consent_denied_practitioner_cannot_change_the_record, opt_out_server, |srv| {
    put_consent(&srv, &consent("c1", "ann", deny_actor("Practitioner/dr-a"))).await;
    let a = user(&srv, "dr-a").await;
    let o = json!({"resourceType": "Observation", "id": "ann-weight", "status": "amended", "code": {"text": "w"},
        "subject": {"reference": "Patient/ann"}});
    assert_outcome(srv.send_as(&a, "PUT", "Observation/ann-weight", Some(o)).await, StatusCode::NOT_FOUND).await;
    assert_outcome(srv.send_as(&a, "DELETE", "Observation/ann-weight", None).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body(srv.get("Observation/ann-weight").await).await["status"], "final", "nothing changed");
});

backends_from!(consent_that_is_no_longer_active_stops_applying, opt_out_server, |srv| {
    let mut c = consent("c1", "ann", deny_actor("Practitioner/dr-a"));
    put_consent(&srv, &c).await;
    let a = user(&srv, "dr-a").await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::NOT_FOUND);
    c["status"] = json!("inactive");
    put_consent(&srv, &c).await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::OK);
});

/// The reference's example: deny PSY to everyone but the care team, or break the glass.
fn psy_except_care_team() -> Value {
    consent(
        "c-psy",
        "ann",
        json!({"type": "permit", "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
        "provision": [{"type": "deny",
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
            "securityLabel": [{"system": ACT_CODE, "code": "PSY"}],
            "provision": [
                {"type": "permit", "actor": [{"role": {"text": "care team"}, "reference": {"reference": "CareTeam/ct1"}}]}
            ]}]}),
    )
}

backends_from!(consent_exception_for_the_care_team, opt_out_server, |srv| {
    put_consent(&srv, &psy_except_care_team()).await;
    let (a, b) = (user(&srv, "dr-a").await, user(&srv, "dr-b").await);
    for t in [&a, &b] {
        assert_eq!(status(&srv, t, "Observation/ann-psy").await, StatusCode::NOT_FOUND);
        assert_eq!(status(&srv, t, "Observation/ann-weight").await, StatusCode::OK, "only PSY is denied");
    }
    // dr-a joins ann's care team: the exception to the exception now permits dr-a.
    let team = json!({"resourceType": "CareTeam", "id": "ct1", "status": "active", "subject": {"reference": "Patient/ann"},
        "participant": [{"member": {"reference": "Practitioner/dr-a"}}]});
    assert!(srv.put("CareTeam/ct1", &team).await.status().is_success());
    assert_eq!(status(&srv, &a, "Observation/ann-psy").await, StatusCode::OK);
    assert_eq!(status(&srv, &b, "Observation/ann-psy").await, StatusCode::NOT_FOUND);
});

backends_from!(break_the_glass_overrides_a_consent_deny, opt_out_server, |srv| {
    put_consent(&srv, &consent("c1", "ann", deny_actor("Practitioner/dr-b"))).await;
    let b = user(&srv, "dr-b").await;
    assert_eq!(status(&srv, &b, "Observation/ann-weight").await, StatusCode::NOT_FOUND);
    let mut a = Authorize::new(&srv, "openid fhirUser user/*.cruds");
    a.extra.push(("purpose_of_use".into(), "BTG".into()));
    let code = code_for(&srv, &a, "dr-b").await;
    let glass =
        exchange(&srv, &code, &[]).await.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&srv, &glass, "Observation/ann-weight").await, StatusCode::OK);
});

backends_from!(opt_in_shares_nothing_without_a_permit, opt_in_server, |srv| {
    // The patient sees her own record without any Consent.
    let ann =
        tokens_for(&srv, "launch/patient patient/*.rs", "ann").await["access_token"].as_str().unwrap().to_string();
    assert_eq!(status(&srv, &ann, "Observation/ann-weight").await, StatusCode::OK);
    let a = user(&srv, "dr-a").await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::NOT_FOUND);
    assert_eq!(status(&srv, &a, "Patient/bob").await, StatusCode::NOT_FOUND);
    assert!(ids(&srv, &a, "Observation").await.is_empty());
    // What belongs to no patient is not affected.
    assert_eq!(status(&srv, &a, "Practitioner/dr-smith").await, StatusCode::OK);
    put_consent(&srv, &consent("c1", "ann", json!({"type": "permit"}))).await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::OK);
    assert_eq!(
        ids(&srv, &a, "Observation").await,
        vec!["Observation/ann-psy".to_string(), "Observation/ann-weight".to_string()]
    );
});

backends_from!(consent_deny_for_a_data_period_hides_that_period_only, opt_out_server, |srv| {
    for (id, date) in [("ann-2020", "2020-06-01"), ("ann-2024", "2024-06-01")] {
        let o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": id},
            "subject": {"reference": "Patient/ann"}, "effectiveDateTime": date});
        assert!(srv.put(&format!("Observation/{id}"), &o).await.status().is_success());
    }
    put_consent(
        &srv,
        &consent(
            "c1",
            "ann",
            json!({"type": "permit", "provision": [{"type": "deny",
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
                "dataPeriod": {"start": "2020-01-01", "end": "2020-12-31"}}]}),
        ),
    )
    .await;
    let a = user(&srv, "dr-a").await;
    assert_eq!(status(&srv, &a, "Observation/ann-2020").await, StatusCode::NOT_FOUND);
    assert_eq!(status(&srv, &a, "Observation/ann-2024").await, StatusCode::OK);
    assert_eq!(status(&srv, &a, "Patient/ann").await, StatusCode::OK, "the class limits the deny to Observations");
    let found = ids(&srv, &a, "Observation?subject=Patient/ann").await;
    assert!(
        found.contains(&"Observation/ann-2024".to_string()) && !found.contains(&"Observation/ann-2020".to_string())
    );
    // An Observation without a clinical date may lie in the period: the deny covers it.
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::NOT_FOUND);
});

backends_from!(patient_chooser_never_offers_a_patient_whose_consent_denies_the_user, opt_out_server, |srv| {
    put_consent(&srv, &consent("c1", "ann", deny_actor("Practitioner/dr-a"))).await;
    let chooser = |user: &'static str| {
        let srv = &srv;
        async move {
            let mut b = Browser::authorize(srv, &Authorize::new(srv, "launch/patient patient/*.rs")).await;
            b.login(user, PASSWORD).await;
            assert_eq!(b.status, StatusCode::OK, "{}", b.html);
            b.form().patients
        }
    };
    let offered = chooser("dr-a").await;
    assert!(!offered.contains(&"ann".to_string()), "{offered:?}");
    assert!(offered.contains(&"bob".to_string()), "{offered:?}");
    assert!(chooser("dr-b").await.contains(&"ann".to_string()), "another practitioner still gets her");
});

backends_from!(consent_period_takes_effect_when_it_starts_without_any_write, opt_out_server, |srv| {
    let now = bastion_fhir::primitives::Instant::now().millis;
    let start = bastion_fhir::primitives::Instant::from_millis(now + 3_000).to_fhir();
    let deny_from_start = json!({"type": "permit", "provision": [{"type": "deny", "period": {"start": start},
        "actor": [{"role": {"text": "x"}, "reference": {"reference": "Practitioner/dr-a"}}]}]});
    put_consent(&srv, &consent("c1", "ann", deny_from_start)).await;
    let a = user(&srv, "dr-a").await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::OK, "not yet");
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    assert_eq!(status(&srv, &a, "Observation/ann-weight").await, StatusCode::NOT_FOUND, "from its start on");
});
