//! The binary as an operator runs it: configuration errors, environment overrides, demo.

use std::process::Command;

use crate::harness::*;

fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bastion-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn unknown_config_key_rejected_at_start() {
    let dir = temp_dir();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\nlisten_port = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bastion"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_port"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A privacy setting that cannot be honoured stops the server at start, naming the mistake.
#[test]
fn bad_privacy_settings_rejected_at_start() {
    let dir = temp_dir();
    for (toml, names) in [
        ("[privacy]\ndefault_confidentiality = \"secret\"\n", "default_confidentiality"),
        (
            "[[users]]\nusername = \"u\"\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$aGVsbG8$aGVsbG8\"\nclearance = \"top\"\n",
            "clearance",
        ),
        (
            "[[labelling]]\nname = \"psy\"\ntypes = [\"Condition\"]\ncodes = [\"http://snomed.info/sct|35489007\"]\nlabels = [\"http://terminology.hl7.org/CodeSystem/v3-ActCode|PSYCH\"]\n",
            "not a security label this server knows",
        ),
        (
            "[[roles]]\nname = \"desk\"\n[[masking]]\nname = \"m\"\ntypes = [\"Patient\"]\nelements = [\"telephone\"]\nroles = [\"desk\"]\n",
            "has no element telephone",
        ),
    ] {
        let cfg = dir.join("bad.toml");
        std::fs::write(&cfg, format!("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{toml}", dir.display()))
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_bastion"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{toml}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_environment_key_rejected_at_start() {
    let dir = temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_bastion"))
        .arg("serve")
        .env("BASTION_SERVER__LISTEN", "127.0.0.1:0")
        .env("BASTION_STORAGE__URLL", "sqlite://x.db")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("urll"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_configuration_file() {
    // The file leaves the default (16 MiB) body limit; the environment lowers it.
    let dir = temp_dir();
    let cfg = dir.join("bastion.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/b.db\"\n{ADMIN_CLIENT_TOML}",
            dir.display()
        ),
    )
    .unwrap();
    let mut srv = Server::spawn(&cfg, &[], &[("BASTION_LIMITS__MAX_BODY_BYTES", "2048")], dir, None).unwrap();
    srv.sign_in_as_admin().await;
    let big = json!({"resourceType": "Patient", "name": [{"family": "x".repeat(4000)}]});
    assert_outcome(srv.post("Patient", &big).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(srv.post("Patient", &json!({"resourceType": "Patient"})).await.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_loads_demo_data_and_prints_tips() {
    let dir = temp_dir();
    let cfg = dir.join("bastion.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/b.db\"\n", dir.display()),
    )
    .unwrap();
    let mut srv = Server::spawn(&cfg, &["--demo"], &[], dir, None).unwrap();
    // The tips say how to get a token for the demo client; follow them.
    let mut secret = None;
    for _ in 0..100 {
        secret = srv.stdout.lock().unwrap().iter().find_map(|l| {
            l.split("-u demo-admin:").nth(1).map(|rest| rest.split_whitespace().next().unwrap().to_string())
        });
        if secret.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let secret = secret.expect("the demo prints how to get a token");
    assert_eq!(srv.get("Patient/demo-alice").await.status(), StatusCode::UNAUTHORIZED, "no token, no data");
    let token = srv.client_credentials("demo-admin", &secret, "system/*.rs").await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    srv.client = reqwest::Client::builder().default_headers(headers).build().unwrap();
    let p = body(srv.get("Patient/demo-alice").await).await;
    assert_eq!(p["name"][0]["family"], "Anders");
    let obs = body(srv.get("Observation?code=http://loinc.org|8867-4").await).await;
    assert_eq!(obs["total"], 3);
    let labelled = body(srv.get("Observation/demo-bob-hiv").await).await;
    assert_eq!(labelled["meta"]["security"][0]["code"], "R");
    // The demo users: alice signs in to the demo app and reads her own record.
    let password = srv
        .stdout
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.split("password for this run: ").nth(1).map(|r| r.split(')').next().unwrap().to_string()))
        .expect("the demo prints the users' password");
    let mut a = crate::smart::Authorize::new(&srv, "launch/patient openid fhirUser patient/*.rs");
    a.client = "demo-app".into();
    a.redirect = "http://localhost:9000/callback".into();
    let mut b = crate::smart::Browser::authorize(&srv, &a).await;
    b.login("alice", &password).await;
    b.decide("approve").await;
    let code = b.redirect_params()["code"].clone();
    let form = crate::smart::encode(&[
        ("grant_type".into(), "authorization_code".into()),
        ("code".into(), code),
        ("redirect_uri".into(), a.redirect.clone()),
        ("client_id".into(), a.client.clone()),
        ("code_verifier".into(), crate::smart::VERIFIER.into()),
    ]);
    let r = reqwest::Client::new()
        .post(format!("{}/auth/token", srv.root))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["patient"], "demo-alice");
    let me = reqwest::Client::new()
        .get(srv.url("Patient/demo-alice"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
}

#[test]
fn hash_password_prints_an_argon2id_phc_string_and_refuses_an_empty_one() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bastion"))
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("correct horse\n");
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(!phc.contains("correct horse"), "the password is not echoed");
    assert_ne!(run("correct horse\n").stdout, phc.as_bytes(), "a fresh salt every time");
    assert!(!run("\n").status.success());
}
