//! Demo data for `bastion serve --demo`: a handful of patients with observations, some of
//! them security-labelled, written with fixed ids so that a restart does not duplicate them.

use bastion_server::engine::{Engine, RequestContext};
use bastion_server::interaction::Interaction;
use serde_json::{Value, json};

const PATIENTS: &[(&str, &str, &str, &str, &str)] = &[
    ("demo-alice", "Alice", "Anders", "female", "1984-03-12"),
    ("demo-bob", "Bob", "Berger", "male", "1972-11-02"),
    ("demo-carol", "Carol", "Castillo", "female", "1990-06-25"),
];

fn patient(id: &str, given: &str, family: &str, gender: &str, birth: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": id,
        "identifier": [{"system": "urn:bastion:demo:mrn", "value": format!("MRN-{id}")}],
        "name": [{"family": family, "given": [given]}],
        "gender": gender, "birthDate": birth
    })
}

fn observation(
    id: &str,
    patient: &str,
    loinc: &str,
    display: &str,
    value: f64,
    unit: &str,
    security: Option<(&str, &str)>,
) -> Value {
    let mut o = json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2026-01-15T09:30:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    });
    if let Some((system, code)) = security {
        o["meta"] = json!({"security": [{"system": system, "code": code}]});
    }
    o
}

fn demo_resources() -> Vec<Value> {
    let mut out = Vec::new();
    for (id, given, family, gender, birth) in PATIENTS {
        out.push(patient(id, given, family, gender, birth));
        out.push(observation(&format!("{id}-hr"), id, "8867-4", "Heart rate", 72.0, "/min", None));
        out.push(observation(&format!("{id}-bw"), id, "29463-7", "Body weight", 70.5, "kg", None));
    }
    out.push(json!({"resourceType": "Practitioner", "id": "demo-dr", "name": [{"family": "Demo", "given": ["Dana"]}]}));
    // Labelled records, for the privacy features: restricted and psychiatry-sensitive.
    out.push(observation(
        "demo-alice-phq9",
        "demo-alice",
        "44261-6",
        "PHQ-9 total score",
        14.0,
        "{score}",
        Some(("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY")),
    ));
    out.push(observation(
        "demo-bob-hiv",
        "demo-bob",
        "75622-1",
        "HIV 1 and 2 tests",
        0.0,
        "1",
        Some(("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R")),
    ));
    out
}

/// Writes the demo resources as one transaction.
pub async fn load(engine: &Engine) -> Result<(), String> {
    let entries: Vec<Value> = demo_resources()
        .into_iter()
        .map(|r| {
            let url = format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default());
            json!({"fullUrl": format!("{}/{url}", engine.base), "resource": r, "request": {"method": "PUT", "url": url}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    engine
        .execute(&RequestContext::unrestricted(), Interaction::Bundle { body: bundle })
        .await
        .map(|_| ())
        .map_err(|e| e.outcome().to_json().to_string())
}

/// The demo's backend client: a confidential client with a fresh random secret, allowed
/// `system/*.cruds`, added unless the configuration already registers `demo-admin`.
pub const DEMO_CLIENT: &str = "demo-admin";

pub fn add_demo_client(config: &mut bastion_server::Config) -> Result<String, String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let secret = hex::encode(bytes);
    if !config.clients.iter().any(|c| c.id == DEMO_CLIENT) {
        config.clients.push(bastion_server::config::ClientConfig {
            id: DEMO_CLIENT.into(),
            kind: "confidential".into(),
            redirect_uris: Vec::new(),
            scopes: "system/*.cruds".into(),
            secret: Some(secret.clone()),
            jwks: None,
            jwks_uri: None,
            purposes: Vec::new(),
            roles: vec![DEMO_CLIENT.into()],
            organization: None,
            // The demo's operator sees every label; the demo clinician does not.
            clearance: Some("V".into()),
        });
        if !config.roles.iter().any(|r| r.name == DEMO_CLIENT) {
            config.roles.push(bastion_server::config::RoleConfig {
                name: DEMO_CLIENT.into(),
                permissions: vec!["system/*.cruds".into()],
                sensitivity: vec!["*".into()],
                label_admin: true,
            });
        }
    }
    Ok(secret)
}

/// The demo's app and users: a public SMART app `demo-app` (redirect
/// `http://localhost:9000/callback`), a clinician `dr-demo` and the patient `alice`, both with
/// one password made for this run. Returns the password.
pub const DEMO_APP: &str = "demo-app";

pub fn add_demo_users(config: &mut bastion_server::Config) -> Result<String, String> {
    let mut bytes = [0u8; 9];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let password = hex::encode(bytes);
    let hash = bastion_auth::secret::hash_password(&password).map_err(|e| e.to_string())?;
    if !config.clients.iter().any(|c| c.id == DEMO_APP) {
        config.clients.push(bastion_server::config::ClientConfig {
            id: DEMO_APP.into(),
            kind: "public".into(),
            redirect_uris: vec!["http://localhost:9000/callback".into()],
            scopes: "launch launch/patient launch/encounter openid fhirUser offline_access online_access patient/*.rs user/*.rs"
                .into(),
            secret: None,
            jwks: None,
            jwks_uri: None,
            purposes: Vec::new(),
            roles: Vec::new(),
            organization: None,
            clearance: None,
        });
    }
    for (name, permissions) in
        [("demo-clinician", vec!["user/*.cruds", "patient/*.cruds"]), ("demo-patient", vec!["patient/*.rs"])]
    {
        if !config.roles.iter().any(|r| r.name == name) {
            config.roles.push(bastion_server::config::RoleConfig {
                name: name.into(),
                permissions: permissions.into_iter().map(str::to_string).collect(),
                sensitivity: Vec::new(),
                label_admin: false,
            });
        }
    }
    for (username, fhir_user, role) in
        [("dr-demo", "Practitioner/demo-dr", "demo-clinician"), ("alice", "Patient/demo-alice", "demo-patient")]
    {
        if !config.users.iter().any(|u| u.username == username) {
            config.users.push(bastion_server::config::UserConfig {
                username: username.into(),
                password: hash.clone(),
                fhir_user: Some(fhir_user.into()),
                roles: vec![role.into()],
                organization: None,
                clearance: None,
                purposes: Vec::new(),
                break_glass: false,
            });
        }
    }
    Ok(password)
}

pub fn print_users(public_url: &str, password: &str) {
    let public_url = public_url.trim_end_matches('/');
    println!();
    println!("Demo users (password for this run: {password}): dr-demo (a clinician), alice (the patient demo-alice).");
    println!(
        "A SMART app registered as {DEMO_APP} (public, redirect http://localhost:9000/callback) can sign them in at"
    );
    println!("  {public_url}/auth/authorize  (see the README, \"Apps and users\")");
}

pub fn print_tips(base: &str, public_url: &str, secret: &str) {
    let public_url = public_url.trim_end_matches('/');
    println!();
    println!(
        "Demo data loaded: {} patients with observations; two are security-labelled (PSY, R): {DEMO_CLIENT} sees them, dr-demo does not.",
        PATIENTS.len()
    );
    println!("Get a token (client {DEMO_CLIENT}, a secret made for this run):");
    println!(
        "  TOKEN=$(curl -s -u {DEMO_CLIENT}:{secret} -d grant_type=client_credentials -d 'scope=system/*.rs system/*.cruds' {public_url}/auth/token | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')"
    );
    println!("Try:");
    println!("  curl {base}/metadata");
    println!("  curl {base}/.well-known/smart-configuration");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/Patient/demo-alice");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" '{base}/Observation?code=http://loinc.org|8867-4'");
    println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/Patient/demo-alice/_history");
    println!(
        "  curl -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/fhir+json' -d '{{\"resourceType\":\"Patient\",\"name\":[{{\"family\":\"New\"}}]}}' {base}/Patient"
    );
}
