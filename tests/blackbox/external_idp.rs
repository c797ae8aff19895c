//! Tokens from an external identity provider: a real, certified OpenID provider (npm
//! `oidc-provider`, `tests/js/oidc_provider.mjs`) runs on loopback and issues JWT access
//! tokens; Bastion trusts it through `[[trusted_issuers]]` (keys found by OpenID discovery)
//! and must accept its tokens and nothing that merely claims to come from it.
//!
//! Needs `npm ci` in `tests/js` (`.ci/run` does it); skipped loudly without it, failed under CI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::harness::*;

const IDP_CLIENT: &str = "ext-analytics";
const IDP_SECRET: &str = "ext-analytics-secret-0123456789";
const IDP_SCOPES: &str = "system/Patient.rs system/Observation.rs";

struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn js_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

fn start_provider(audience_hint: &str) -> Option<Provider> {
    if !js_dir().join("node_modules/oidc-provider").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the OpenID provider test: `npm ci` in tests/js");
        eprintln!("\n=== SKIPPED: external IdP test (no tests/js/node_modules; run `npm ci` there) ===\n");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("node")
        .arg(js_dir().join("oidc_provider.mjs"))
        .env("PORT", port.to_string())
        .env("AUDIENCE", audience_hint)
        .env("CLIENT_ID", IDP_CLIENT)
        .env("CLIENT_SECRET", IDP_SECRET)
        .env("SCOPES", IDP_SCOPES)
        .env("FHIR_USER", "Practitioner/dr-ext")
        .env("PATIENT", "ann")
        .env("ROLES", "ward-a offline_access")
        .env("ORGANIZATION", "general-hospital")
        .env("CLEARANCE", "R")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    let issuer = ready.strip_prefix("ready ").unwrap_or_else(|| panic!("provider did not start: {ready}")).to_string();
    Some(Provider { child, issuer })
}

fn audience() -> String {
    format!("{CLUSTER_URL}/fhir")
}

async fn idp_token(p: &Provider, resource: &str) -> String {
    idp_token_for(p, resource, "system/Patient.rs").await
}

async fn idp_token_for(p: &Provider, resource: &str, scope: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/token", p.issuer))
        .basic_auth(IDP_CLIENT, Some(IDP_SECRET))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&scope={}&resource={}",
            scope.replace('/', "%2F").replace(' ', "+"),
            resource.replace(':', "%3A").replace('/', "%2F")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

/// Bastion at [`CLUSTER_URL`] trusting the provider, and the provider.
async fn deployment(backend: Backend) -> Option<(Server, Provider)> {
    let p = start_provider(&audience())?;
    let toml = format!("[[trusted_issuers]]\nissuer = \"{}\"\naudience = \"{}\"\n", p.issuer, audience());
    let srv = Server::start_cluster(backend, &toml).await?;
    Some((srv, p))
}

async fn status_with(srv: &Server, token: &str) -> StatusCode {
    srv.anonymous().get(srv.url("Patient")).bearer_auth(token).send().await.unwrap().status()
}

fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let h = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    let c = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (h, c)
}

macro_rules! idp_backends {
    ($name:ident, |$srv:ident, $idp:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let Some(($srv, $idp)) = deployment(Backend::Sqlite).await else { return };
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(($srv, $idp)) = deployment(Backend::Postgres).await else { return };
                $body
            }
        }
    };
}

idp_backends!(oidc_provider_token_reaches_the_api, |srv, idp| {
    let token = idp_token(&idp, &audience()).await;
    let (header, claims) = parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], idp.issuer);
    assert_eq!(status_with(&srv, &token).await, StatusCode::OK);
    assert_eq!(status_with(&srv, &token).await, StatusCode::OK, "and again, from the validation cache");
});

idp_backends!(oidc_provider_token_for_another_audience_is_401, |srv, idp| {
    let token = idp_token(&idp, "http://other-server.example/fhir").await;
    assert_eq!(status_with(&srv, &token).await, StatusCode::UNAUTHORIZED);
});

idp_backends!(tampered_oidc_provider_token_is_401, |srv, idp| {
    let token = idp_token(&idp, &audience()).await;
    let (_, mut claims) = parts(&token);
    claims["scope"] = json!("system/*.cruds");
    let mut pieces: Vec<String> = token.split('.').map(str::to_string).collect();
    pieces[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_eq!(status_with(&srv, &pieces.join(".")).await, StatusCode::UNAUTHORIZED);
});

idp_backends!(token_claiming_the_trusted_issuer_with_alg_none_is_401, |srv, idp| {
    let token = idp_token(&idp, &audience()).await;
    let (_, claims) = parts(&token);
    let forged = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"idp-rs256"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_eq!(status_with(&srv, &forged).await, StatusCode::UNAUTHORIZED);
});

idp_backends!(token_claiming_the_trusted_issuer_hs256_with_its_public_key_is_401, |srv, idp| {
    let token = idp_token(&idp, &audience()).await;
    let (_, claims) = parts(&token);
    let jwks: Value = reqwest::get(format!("{}/jwks", idp.issuer)).await.unwrap().json().await.unwrap();
    let n = jwks["keys"][0]["n"].as_str().unwrap().to_string();
    let header = jsonwebtoken::Header {
        alg: jsonwebtoken::Algorithm::HS256,
        kid: Some("idp-rs256".into()),
        ..Default::default()
    };
    let forged = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(n.as_bytes())).unwrap();
    assert_eq!(status_with(&srv, &forged).await, StatusCode::UNAUTHORIZED);
});

idp_backends!(token_claiming_the_trusted_issuer_signed_by_another_key_is_401, |srv, idp| {
    let token = idp_token(&idp, &audience()).await;
    let (_, claims) = parts(&token);
    let stranger = bastion_auth::assertion::testkit::TestKey::ec("idp-rs256");
    let forged = stranger.sign_with_header(&json!({"alg": "ES384", "kid": "idp-rs256"}), &claims);
    assert_eq!(status_with(&srv, &forged).await, StatusCode::UNAUTHORIZED);
    let unknown = stranger.sign_with_header(&json!({"alg": "ES384", "kid": "not-the-idps"}), &claims);
    assert_eq!(status_with(&srv, &unknown).await, StatusCode::UNAUTHORIZED);
});

/// A deployment that maps the provider's Keycloak-style roles and organization, with a rule
/// for the `ward-a` role (its patients only) and one for the organization.
async fn mapped_deployment(backend: Backend) -> Option<(Server, Provider)> {
    let p = start_provider(&audience())?;
    let toml = format!(
        r#"[[trusted_issuers]]
issuer = "{}"
audience = "{}"
roles_claim = "realm_access.roles"
organization_claim = "organization"
clearance_claim = "clearance"

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
organizations = ["Organization/general-hospital"]
types = ["Observation"]
organization = "same"
"#,
        p.issuer,
        audience()
    );
    let srv = Server::start_cluster(backend, &toml).await?;
    Some((srv, p))
}

macro_rules! mapped_backends {
    ($name:ident, |$srv:ident, $idp:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let Some(($srv, $idp)) = mapped_deployment(Backend::Sqlite).await else { return };
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(($srv, $idp)) = mapped_deployment(Backend::Postgres).await else { return };
                $body
            }
        }
    };
}

mapped_backends!(external_users_roles_and_organization_drive_the_rules, |srv, idp| {
    for id in ["ann", "bob"] {
        assert!(
            srv.put(&format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id}))
                .await
                .status()
                .is_success()
        );
    }
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/ann"}});
    assert!(srv.post("Observation", &obs).await.status().is_success(), "written by a client without an organization");
    let token = idp_token_for(&idp, &audience(), IDP_SCOPES).await;
    let get = |path: &str| {
        let (srv, token) = (&srv, &token);
        let url = srv.url(path);
        async move { srv.anonymous().get(url).bearer_auth(token).send().await.unwrap() }
    };
    let b = body(get("Patient").await).await;
    assert_eq!(b["total"], 1, "the ward-a role from realm_access.roles confines it to ann: {b}");
    assert_eq!(b["entry"][0]["resource"]["id"], "ann");
    assert_eq!(get("Patient/bob").await.status(), StatusCode::NOT_FOUND);
    let b = body(get("Observation").await).await;
    assert_eq!(b["total"], 0, "an Observation of no organization is outside general-hospital's: {b}");
});

mapped_backends!(external_users_clearance_comes_from_the_mapped_claim, |srv, idp| {
    let labelled = |level: &str| {
        json!({"resourceType": "Patient", "id": "ann",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": level}]}})
    };
    let token = idp_token_for(&idp, &audience(), IDP_SCOPES).await;
    let read = || {
        let (srv, token) = (&srv, &token);
        let url = srv.url("Patient/ann");
        async move { srv.anonymous().get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    // The provider says R: a restricted record is visible (the default clearance is N)...
    assert!(srv.put("Patient/ann", &labelled("R")).await.status().is_success());
    assert_eq!(read().await, StatusCode::OK);
    // ... a very restricted one is not.
    assert!(srv.put("Patient/ann", &labelled("V")).await.status().is_success());
    assert_eq!(read().await, StatusCode::NOT_FOUND);
});
