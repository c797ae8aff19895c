//! `bastion import`: Bundles and NDJSON, all or nothing per file, resumable.

use std::process::Command;

use crate::harness::*;

struct Fixture {
    dir: std::path::PathBuf,
    cfg: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!("bastion-import-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("bastion.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}/b.db\"\n{ADMIN_CLIENT_TOML}",
                dir.display()
            ),
        )
        .unwrap();
        Fixture { dir, cfg }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn import(&self, files: &[&std::path::Path]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_bastion"))
            .args(["import", "--quiet", "--config"])
            .arg(&self.cfg)
            .args(files)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    async fn serve(self) -> Server {
        let mut srv = Server::spawn(&self.cfg.clone(), &[], &[], self.dir.clone(), None).unwrap();
        srv.sign_in_as_admin().await;
        srv
    }
}

fn transaction() -> String {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "name": [{"family": "Imported"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "hr"}, "subject": {"reference": "urn:uuid:p1"}}, "request": {"method": "POST", "url": "Observation"}},
    ]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_bundles_and_ndjson_then_serve_them() {
    let f = Fixture::new();
    let b = f.write("tx.json", &transaction());
    let n = f.write(
        "patients.ndjson",
        "{\"resourceType\":\"Patient\",\"id\":\"nd1\",\"gender\":\"male\"}\n{\"resourceType\":\"Patient\",\"id\":\"nd2\"}\n\n",
    );
    let (ok, out) = f.import(&[&b, &n]);
    assert!(ok, "{out}");
    assert!(out.contains("imported 4 resources from 2 file(s)"), "{out}");
    let srv = f.serve().await;
    assert_eq!(body(srv.get("Patient?_total=accurate").await).await["total"], 3);
    assert_eq!(body(srv.get("Patient/nd1").await).await["gender"], "male");
    let obs = body(srv.get("Observation").await).await;
    assert!(obs["entry"][0]["resource"]["subject"]["reference"].as_str().unwrap().starts_with("Patient/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_file_with_a_bad_line_writes_nothing_and_says_which_line() {
    let f = Fixture::new();
    let good = f.write("good.ndjson", "{\"resourceType\":\"Patient\",\"id\":\"g1\"}\n");
    let bad = f.write(
        "bad.ndjson",
        "{\"resourceType\":\"Patient\",\"id\":\"b1\"}\n{\"resourceType\":\"Patient\",\"id\":\"b2\",\"birthDate\":\"31-12-1999\"}\nnot json\n",
    );
    let (ok, out) = f.import(&[&good, &bad]);
    assert!(!ok, "a failed file makes the command fail");
    assert!(out.contains("line 2"), "{out}");
    assert!(out.contains("line 3"), "{out}");
    assert!(out.contains("nothing from this file was written"), "{out}");
    // fix the file and re-run the same command: the good file is skipped, the fixed one lands
    std::fs::write(&bad, "{\"resourceType\":\"Patient\",\"id\":\"b1\"}\n{\"resourceType\":\"Patient\",\"id\":\"b2\",\"birthDate\":\"1999-12-31\"}\n").unwrap();
    let (ok, out) = f.import(&[&good, &bad]);
    assert!(ok, "{out}");
    assert!(out.contains("already imported"), "{out}");
    assert!(out.contains("1 skipped"), "{out}");
    let srv = f.serve().await;
    assert_eq!(body(srv.get("Patient?_total=accurate").await).await["total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_invalid_transaction_bundle_writes_nothing() {
    let f = Fixture::new();
    let text = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "foo": 1}, "request": {"method": "POST", "url": "Patient"}},
    ]});
    let b = f.write("bad.json", &text.to_string());
    let (ok, out) = f.import(&[&b]);
    assert!(!ok);
    assert!(out.contains("Bundle.entry[1]"), "{out}");
    let srv = f.serve().await;
    assert_eq!(body(srv.get("Patient?_total=accurate").await).await["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_keeps_the_creating_organization_of_an_export() {
    let f = Fixture::new();
    let stamped = json!({"resourceType": "Observation", "id": "exported", "status": "final", "code": {"text": "hr"},
        "meta": {"tag": [{"system": "urn:bastion:creating-organization", "code": "Organization/general-hospital"}]}});
    let n = f.write("obs.ndjson", &format!("{stamped}\n"));
    let (ok, out) = f.import(&[&n]);
    assert!(ok, "{out}");
    let srv = f.serve().await;
    let o = body(srv.get("Observation/exported").await).await;
    assert_eq!(o["meta"]["tag"][0]["code"], "Organization/general-hospital", "{o}");
    let b =
        body(srv.get("Observation?_tag=urn:bastion:creating-organization|Organization/general-hospital").await).await;
    assert_eq!(b["total"], 1, "and it is indexed, so the organization rule sees it");
}
