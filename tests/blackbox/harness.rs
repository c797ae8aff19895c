//! Starts the real `bastion` binary on an ephemeral port, against SQLite or PostgreSQL,
//! and talks to it over HTTP.
//!
//! PostgreSQL runs when `BASTION_TEST_POSTGRES_URL` names a server; each test server gets a
//! database of its own, dropped afterwards. Without it, the PostgreSQL half of every test
//! prints a banner that bypasses the test harness's output capture, so a run that skipped
//! it says so.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

pub use reqwest::StatusCode;
pub use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Server {
    child: Child,
    pub base: String,
    pub root: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pg: Option<(String, String)>, // (admin url, database)
    /// Every line the server printed on standard output so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every line of its log (standard error) so far: warnings, and the security events.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Whether dropping this server removes its data directory (a second node does not).
    owns_data: bool,
}

static SKIP_BANNER: Once = Once::new();

/// The public URL of a test deployment with several nodes.
pub const CLUSTER_URL: &str = "http://cluster.bastion.test";

/// Every test server registers this confidential client; the harness signs in with it. It
/// sees every label (clearance V, every sensitivity) and may change labels.
pub const ADMIN_CLIENT: &str = "blackbox-admin";
pub const ADMIN_SECRET: &str = "blackbox-admin-secret-0123456789";
pub const ADMIN_CLIENT_TOML: &str = r#"[[clients]]
id = "blackbox-admin"
kind = "confidential"
secret = "blackbox-admin-secret-0123456789"
scopes = "system/*.cruds"
roles = ["blackbox-admin"]
clearance = "V"

[[roles]]
name = "blackbox-admin"
permissions = ["system/*.cruds"]
sensitivity = ["*"]
label_admin = true
"#;

fn loud(msg: &str) {
    // Directly on the process's stderr: libtest captures only the print macros.
    let _ = writeln!(std::io::stderr(), "{msg}");
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("BASTION_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            SKIP_BANNER.call_once(|| {
                loud("\n==================================================================");
                loud("SKIPPED: every PostgreSQL test (BASTION_TEST_POSTGRES_URL is not set).");
                loud("Only the SQLite backend was tested. Set it, e.g.");
                loud("  BASTION_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres");
                loud("==================================================================\n");
            });
            None
        }
    }
}

fn database_url(admin: &str, db: &str) -> String {
    // Replace the path part (the database) of the admin URL.
    let (head, tail) = match admin.find("://") {
        Some(i) => admin.split_at(i + 3),
        None => ("", admin),
    };
    let (authority, rest) = tail.split_once('/').unwrap_or((tail, ""));
    let query = rest.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{head}{authority}/{db}{query}")
}

async fn pg_admin(admin: &str, statement: &str) {
    let (client, conn) =
        tokio_postgres::connect(admin, tokio_postgres::NoTls).await.expect("connect to test PostgreSQL");
    let task = tokio::spawn(conn);
    client.batch_execute(statement).await.expect("admin statement");
    drop(client);
    let _ = task.await;
}

impl Server {
    pub async fn start(backend: Backend) -> Option<Server> {
        Self::start_with(backend, "").await
    }

    /// Starts a server with extra TOML appended to the test configuration.
    pub async fn start_with(backend: Backend, extra_toml: &str) -> Option<Server> {
        Self::start_inner(backend, "", extra_toml).await
    }

    /// Starts the first node of a deployment whose public URL is [`CLUSTER_URL`] (so that a
    /// [`Server::second_node`] accepts its tokens): issuer and audience are that URL's.
    pub async fn start_cluster(backend: Backend, extra_toml: &str) -> Option<Server> {
        Self::start_inner(backend, &format!("public_url = \"{CLUSTER_URL}\"\n"), extra_toml).await
    }

    async fn start_inner(backend: Backend, server_toml: &str, extra_toml: &str) -> Option<Server> {
        let data_dir = std::env::temp_dir().join(format!("bastion-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let (storage_url, pg) = match backend {
            Backend::Sqlite => (format!("sqlite://{}/bastion.db", data_dir.display()), None),
            Backend::Postgres => {
                let admin = postgres_url()?;
                let db = format!("bastion_t_{}", uuid::Uuid::new_v4().simple());
                pg_admin(&admin, &format!("CREATE DATABASE {db}")).await;
                (database_url(&admin, &db), Some((admin, db)))
            }
        };
        let config_path = data_dir.join("bastion.toml");
        std::fs::write(
            &config_path,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n{server_toml}\n[storage]\nurl = \"{storage_url}\"\n\n{ADMIN_CLIENT_TOML}\n{extra_toml}\n"
            ),
        )
        .unwrap();
        let mut server = Self::spawn(&config_path, &[], &[], data_dir.clone(), pg)
            .unwrap_or_else(|e| panic!("server did not start: {e}"));
        server.sign_in_as_admin().await;
        Some(server)
    }

    /// Gets a `system/*.cruds` token for the test's admin client and sends it with every
    /// request made through [`Server::client`] from then on.
    pub async fn sign_in_as_admin(&mut self) {
        let token = self.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/*.cruds").await;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        self.client = reqwest::Client::builder().default_headers(headers).build().unwrap();
    }

    /// A token from the token endpoint for a confidential client (HTTP Basic).
    pub async fn client_credentials(&self, id: &str, secret: &str, scope: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/auth/token", self.root))
            .basic_auth(id, Some(secret))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=client_credentials&scope={}", scope.replace(' ', "+").replace('*', "%2A")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "client_credentials for {id}");
        let b: Value = r.json().await.unwrap();
        b["access_token"].as_str().unwrap().to_string()
    }

    /// Another server process on the same configuration, database and data directory (so
    /// the same signing key): a second node of one deployment.
    pub async fn second_node(&self) -> Server {
        let mut node = Self::spawn(&self.data_dir.join("bastion.toml"), &[], &[], self.data_dir.clone(), None)
            .unwrap_or_else(|e| panic!("second node did not start: {e}"));
        node.owns_data = false;
        node.sign_in_as_admin().await;
        node
    }

    pub fn backend(&self) -> Backend {
        if self.pg.is_some() { Backend::Postgres } else { Backend::Sqlite }
    }

    /// A client that sends no token.
    pub fn anonymous(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// Spawns `bastion serve --config FILE [args]` and waits for its "listening" line.
    pub fn spawn(
        config_path: &PathBuf,
        args: &[&str],
        envs: &[(&str, &str)],
        data_dir: PathBuf,
        pg: Option<(String, String)>,
    ) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bastion"))
            .arg("serve")
            .arg("--config")
            .arg(config_path)
            .args(args)
            .current_dir(&data_dir)
            // Warnings, and every security event (what the audit trail will record).
            .env("BASTION_LOG", "warn,bastion_server::auth::events=info")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(idx) = line.find("listening on http://") {
                    let _ = tx.send(line[idx + "listening on ".len()..].trim().to_string());
                    sent = true;
                }
                collected.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log_lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log_lines.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(root) => Ok(Server {
                child,
                base: format!("{root}/fhir"),
                root,
                client: reqwest::Client::new(),
                data_dir,
                pg,
                stdout: lines,
                log,
                owns_data: true,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let err = log.lock().unwrap().join("\n");
                Err(format!("no 'listening on' line; stderr: {err}"))
            }
        }
    }

    /// The log lines so far that contain every one of `needles` (a security event's name and
    /// what it names, say). The server writes an event before it answers; the lines reach
    /// this process through a pipe, so they are read once the pipe has settled.
    pub async fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.log.lock().unwrap().len();
            if now == last {
                break;
            }
            last = now;
        }
        self.log.lock().unwrap().iter().filter(|l| needles.iter().all(|n| l.contains(n))).cloned().collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn send(&self, method: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .request(method.parse().unwrap(), self.url(path))
            .header("Content-Type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A request with a FHIR JSON body (if any) and extra headers.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut r = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(b) = body {
            r = r.header("Content-Type", "application/fhir+json").body(b.to_string());
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }

    /// A request as the caller of `token` (not the admin): `body` as FHIR JSON, or as a JSON
    /// Patch document with PATCH.
    pub async fn send_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut r = self.anonymous().request(method.parse().unwrap(), self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            let ct = if method == "PATCH" { "application/json-patch+json" } else { "application/fhir+json" };
            r = r.header("Content-Type", ct).body(b.to_string());
        }
        r.send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.send("POST", path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.send("PUT", path, body).await
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// Creates a resource and returns the stored representation.
    pub async fn create(&self, body: &Value) -> Value {
        let t = body["resourceType"].as_str().unwrap();
        let r = self.post(t, body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "create {t}");
        r.json().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
        if let Some((admin, db)) = self.pg.take() {
            // Drop runs inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(pg_admin(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")));
            })
            .join();
        }
    }
}

/// Reads a response body as JSON.
/// `Type/id` of every resource entry of a Bundle, in order.
pub fn entry_refs(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["resource"]["id"].is_string())
                .map(|x| {
                    format!(
                        "{}/{}",
                        x["resource"]["resourceType"].as_str().unwrap(),
                        x["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn body(r: reqwest::Response) -> Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error response: the status, an OperationOutcome body, and that it names no
/// internals (SQL, file paths, Rust panics).
pub async fn assert_outcome(r: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status, "status");
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.starts_with("application/fhir+json"), "content-type {ct}");
    let text = r.text().await.unwrap();
    for leak in ["SELECT", "INSERT", "sqlite", "postgres", "panicked", ".rs:", "/src/", "rusqlite", "tokio"] {
        assert!(!text.contains(leak), "error body reveals internals ({leak}): {text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["resourceType"], "OperationOutcome", "{text}");
    assert!(v["issue"][0]["severity"].is_string());
    v
}

/// Every test body in this suite runs on both backends.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, |$srv:ident| $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $srv = $crate::harness::Server::start($crate::harness::Backend::Sqlite).await.unwrap();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($srv) = $crate::harness::Server::start($crate::harness::Backend::Postgres).await else {
                    return;
                };
                $body
            }
        }
    };
}

/// A test on both backends, each with the server that `$start(backend)` (an async fn returning
/// `Option<Server>`, `None` where PostgreSQL is not configured) starts and prepares.
#[macro_export]
macro_rules! backends_from {
    ($name:ident, $start:path, |$srv:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $srv = $start($crate::harness::Backend::Sqlite).await.unwrap();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($srv) = $start($crate::harness::Backend::Postgres).await else { return };
                $body
            }
        }
    };
}
