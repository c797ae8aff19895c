//! The login and consent pages in a real browser: headless Chromium runs a SMART standalone
//! launch with SMART's own JavaScript client (npm `fhirclient`) through Bastion's pages, and
//! the app reads the patient. The driver is `tests/js/standalone_launch.mjs`.
//!
//! Needs Chromium (`/usr/bin/chromium`) and `npm ci` in `tests/js`; `.ci/run` installs
//! both. Without them the test fails under CI and says loudly that it was skipped elsewhere.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;
use crate::smart::{PASSWORD, seed, smart_toml};

const JS_APP: &str = "smart-js-app";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/js")
}

/// Are Chromium and the npm packages here? Under CI they must be.
fn browser_available() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ok = std::path::Path::new(&chromium).exists() && browser_dir().join("node_modules/fhirclient").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: install chromium and `npm ci` in tests/js"
        );
        eprintln!("\n=== SKIPPED: browser test (no {chromium} or no tests/js/node_modules; run `npm ci` there) ===\n");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn standalone_launch(backend: Backend) {
    if !browser_available() {
        return;
    }
    let port = free_port();
    let scope = "launch/patient openid fhirUser offline_access patient/*.rs";
    let toml = format!(
        "{}\n[[clients]]\nid = \"{JS_APP}\"\nkind = \"public\"\nredirect_uris = [\"http://127.0.0.1:{port}/index.html\"]\nscopes = \"{scope}\"\n",
        smart_toml()
    );
    let Some(srv) = Server::start_with(backend, &toml).await else { return };
    seed(&srv).await;
    let out = Command::new("node")
        .arg(browser_dir().join("standalone_launch.mjs"))
        .env("FHIR_BASE", &srv.base)
        .env("APP_PORT", port.to_string())
        .env("CLIENT_ID", JS_APP)
        .env("SCOPE", scope)
        .env("USERNAME", "ann")
        .env("PASSWORD", PASSWORD)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser run failed:\n{stdout}\n{stderr}");
    let seen: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(seen["resourceType"], "Patient");
    assert_eq!(seen["id"], "ann");
    assert_eq!(seen["patientId"], "ann");
    assert_eq!(seen["family"], "Anders");
    assert_eq!(seen["hasIdToken"], true);
    assert_eq!(seen["hasRefreshToken"], true);
    assert!(seen["fhirUser"].as_str().unwrap_or("").ends_with("Patient/ann"), "{seen}");
    assert!(seen["loginUrl"].as_str().unwrap().starts_with(&format!("{}/auth/authorize", srv.root)));
    let offered: Vec<&str> = seen["consentScopes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["checked"] == true)
        .map(|s| s["value"].as_str().unwrap())
        .collect();
    for s in scope.split(' ') {
        assert!(offered.contains(&s), "{s} ticked on the consent page: {offered:?}");
    }
    assert!(seen["finalUrl"].as_str().unwrap().starts_with(&format!("http://127.0.0.1:{port}/index.html")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhirclient_standalone_launch_reads_the_patient_sqlite() {
    standalone_launch(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhirclient_standalone_launch_reads_the_patient_postgres() {
    standalone_launch(Backend::Postgres).await;
}
