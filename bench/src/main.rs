//! `bastion-bench`: measures the real `bastion` binary over loopback and writes
//! `bench/REPORT.md`. Benchmarks are not tests: nothing here asserts a time.
//!
//! `gen` writes a deterministic dataset, `baseline` serves a fixed FHIR body (the practical
//! upper limit on this machine), and `run` does the whole measurement: import throughput,
//! read-by-id, create and update on SQLite and PostgreSQL, each next to the baseline
//! measured by the same load tool in the same run. `load` is the load tool on its own
//! (read, create, update, transaction against any loopback FHIR base).
#![forbid(unsafe_code)]

mod dataset;
mod load;
mod scenario;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "bastion-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a dataset: transaction Bundles (one file per Bundle of --per-bundle patients) or
    /// NDJSON (one file per resource type, with ids and Type/id references).
    Gen {
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=100_000))]
        patients: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
        per_bundle: u64,
        #[arg(long, value_enum, default_value = "transaction")]
        format: Format,
        #[arg(long)]
        out: PathBuf,
    },
    /// Send load to a FHIR base on loopback: read, create, update or transaction.
    Load(scenario::LoadArgs),
    /// Serve a fixed FHIR Patient at GET /fhir/Patient/{id}.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Run the whole benchmark and write the report.
    Run {
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=100_000))]
        patients: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 10)]
        per_bundle: u64,
        /// Seconds measured per scenario (after a 2 s warm-up).
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        connections: u64,
        #[arg(long, default_value = "target/release/bastion")]
        bastion: PathBuf,
        /// Admin URL of a PostgreSQL server (a database is created and dropped); "none" to skip.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        postgres: String,
        #[arg(long, default_value = "bench/REPORT.md")]
        report: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Transaction,
    Ndjson,
}

const BASELINE_PATIENT: &str = r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"2026-12-02T10:00:00.000Z"},"identifier":[{"system":"urn:bastion:bench:mrn","value":"MRN00000001"}],"name":[{"use":"official","family":"Smith","given":["Emma"]}],"gender":"female","birthDate":"1970-01-01"}"#;

async fn baseline(listen: &str) {
    let app = axum::Router::new().route(
        "/fhir/Patient/{id}",
        axum::routing::get(|| async {
            ([(axum::http::header::CONTENT_TYPE, "application/fhir+json")], BASELINE_PATIENT)
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

/// A child server process and its root URL.
struct Served {
    child: Child,
    root: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_listening(mut cmd: Command) -> Served {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
            }
        }
    });
    let root = rx.recv_timeout(Duration::from_secs(60)).expect("server printed no 'listening on' line");
    load::assert_loopback(&root);
    Served { child, root }
}

struct BackendResult {
    name: String,
    import_resources: u64,
    import_seconds: f64,
    read: load::Figures,
    create: load::Figures,
    update: load::Figures,
    searches: Vec<(String, load::Figures)>,
    db_bytes: Option<u64>,
}

/// The search scenarios of the search issue; `{p}` is a random imported patient.
const SEARCHES: &[&str] = &[
    "Observation?patient={p}&code=http://loinc.org|8867-4&_sort=-date",
    "Observation?patient={p}&category=laboratory&date=ge2020",
    "Patient?name=smi&birthdate=lt1980",
    "Encounter?patient={p}&_revinclude=Observation:encounter",
    "Condition?code=http://snomed.info/sct|44054006&_include=Condition:subject",
    "Observation?subject:Patient.name=Smith",
];

const BENCH_CLIENT: &str = "bench-admin";
const BENCH_SECRET: &str = "bench-admin-secret-0123456789";

/// A client that sends a `system/*.cruds` token of the bench client with every request.
async fn authorized(client: &reqwest::Client, root: &str) -> reqwest::Client {
    let r = client
        .post(format!("{root}/auth/token"))
        .basic_auth(BENCH_CLIENT, Some(BENCH_SECRET))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=system%2F*.cruds")
        .send()
        .await
        .expect("token request");
    let b: Value = r.json().await.expect("token response");
    let token = b["access_token"].as_str().expect("an access token").to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().pool_max_idle_per_host(64).default_headers(headers).build().unwrap()
}

/// `pg_database_size` of the database `url` names.
async fn pg_database_size(url: &str) -> Option<u64> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.ok()?;
    let task = tokio::spawn(conn);
    let row = client.query_one("SELECT pg_database_size(current_database())", &[]).await.ok()?;
    drop(client);
    let _ = task.await;
    row.get::<_, i64>(0).try_into().ok()
}

async fn pg_admin(admin: &str, sql: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.map_err(|e| e.to_string())?;
    drop(client);
    let _ = task.await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn bench_backend(
    name: &str,
    storage_url: &str,
    bastion: &PathBuf,
    bundles: &[String],
    client: &reqwest::Client,
    connections: u64,
    seconds: u64,
    work: &std::path::Path,
) -> BackendResult {
    let cfg = work.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"{storage_url}\"\n\n[[clients]]\nid = \"{BENCH_CLIENT}\"\nkind = \"confidential\"\nsecret = \"{BENCH_SECRET}\"\nscopes = \"system/*.cruds\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bastion);
    cmd.arg("serve").arg("--config").arg(&cfg).env("BASTION_LOG", "warn").current_dir(work);
    let srv = spawn_listening(cmd);
    let base = format!("{}/fhir", srv.root);
    // Every request carries a real token, as a client's would.
    let client = &authorized(client, &srv.root).await;
    let pid = srv.child.id();
    eprintln!("[{name}] importing {} transaction bundles", bundles.len());

    // Import: 2 concurrent posters (the machine has 2 cores).
    let started = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new((0..bundles.len()).collect::<Vec<_>>()));
    let bundles = Arc::new(bundles.to_vec());
    let mut posters = Vec::new();
    for _ in 0..2 {
        let (queue, bundles, client, base) = (queue.clone(), bundles.clone(), client.clone(), base.clone());
        posters.push(tokio::spawn(async move {
            let mut patient_ids = Vec::new();
            let mut resources = 0u64;
            loop {
                let Some(i) = queue.lock().unwrap().pop() else { break };
                let r = client
                    .post(&base)
                    .header("Content-Type", "application/fhir+json")
                    .header("Prefer", "return=minimal")
                    .body(bundles[i].clone())
                    .send()
                    .await
                    .expect("import request");
                assert!(r.status().is_success(), "import failed: {}", r.status());
                let v: Value = r.json().await.unwrap();
                for e in v["entry"].as_array().unwrap() {
                    resources += 1;
                    let loc = e["response"]["location"].as_str().unwrap_or_default();
                    if let Some(rest) = loc.split("/fhir/Patient/").nth(1) {
                        patient_ids.push(rest.split('/').next().unwrap().to_string());
                    }
                }
            }
            (patient_ids, resources)
        }));
    }
    let mut ids = Vec::new();
    let mut import_resources = 0;
    for p in posters {
        let (i, n) = p.await.unwrap();
        ids.extend(i);
        import_resources += n;
    }
    let import_seconds = started.elapsed().as_secs_f64();
    ids.sort();
    let ids = Arc::new(ids);
    eprintln!("[{name}] imported {import_resources} resources in {import_seconds:.1}s; measuring");
    if storage_url.starts_with("postgres") {
        // What autovacuum would do a little later, done now so the figures do not depend
        // on its timing: planner statistics for the freshly loaded tables.
        if let Err(e) = pg_admin(storage_url, "ANALYZE").await {
            eprintln!("[{name}] ANALYZE failed: {e}");
        }
    }

    let (warm, measure) = (Duration::from_secs(2), Duration::from_secs(seconds));
    let (b, i) = (base.clone(), ids.clone());
    let read = load::run(
        client,
        Arc::new(move |w, n| load::Req {
            method: reqwest::Method::GET,
            url: format!("{b}/Patient/{}", i[((w * 7919 + n * 104_729) % i.len() as u64) as usize]),
            body: None,
            form: false,
        }),
        connections,
        warm,
        measure,
        Some(pid),
    )
    .await;
    let b = base.clone();
    let create = load::run(
        client,
        Arc::new(move |w, n| load::Req {
            method: reqwest::Method::POST,
            url: format!("{b}/Patient"),
            body: Some(json!({"resourceType": "Patient", "name": [{"family": format!("Load{w}"), "given": [format!("N{n}")]}], "gender": "other"}).to_string()),
            form: false,
        }),
        connections,
        warm,
        measure,
        Some(pid),
    )
    .await;
    let (b, i) = (base.clone(), ids.clone());
    let update = load::run(
        client,
        Arc::new(move |w, n| {
            // Each connection updates its own slice of patients: no write conflicts.
            let slice = (i.len() as u64 / connections).max(1);
            let id = &i[((w * slice + n % slice) % i.len() as u64) as usize];
            load::Req {
                method: reqwest::Method::PUT,
                url: format!("{b}/Patient/{id}"),
                body: Some(json!({"resourceType": "Patient", "id": id, "gender": if n % 2 == 0 { "female" } else { "male" }, "active": true}).to_string()),
                form: false,
            }
        }),
        connections,
        warm,
        measure,
        Some(pid),
    )
    .await;
    let mut searches = Vec::new();
    for template in SEARCHES {
        let (b, i, t) = (base.clone(), ids.clone(), template.to_string());
        let f = load::run(
            client,
            Arc::new(move |w, n| load::Req {
                method: reqwest::Method::GET,
                url: format!("{b}/{}", t.replace("{p}", &i[((w * 7919 + n * 104_729) % i.len() as u64) as usize])),
                body: None,
                form: false,
            }),
            4,
            Duration::from_secs(1),
            Duration::from_secs(seconds.div_ceil(2)),
            Some(pid),
        )
        .await;
        eprintln!("[{name}] {template}: p50 {:.2} ms p95 {:.2} ms", f.p50_ms, f.p95_ms);
        searches.push((template.to_string(), f));
    }
    drop(srv);
    let db_bytes = match storage_url.strip_prefix("sqlite://") {
        Some(p) => {
            let size = |f: &str| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            Some(size(p) + size(&format!("{p}-wal")))
        }
        None => pg_database_size(storage_url).await,
    };
    BackendResult { name: name.into(), import_resources, import_seconds, read, create, update, searches, db_bytes }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem} GiB memory; load generator on the same machine")
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn row(name: &str, f: &load::Figures, baseline: f64) -> String {
    format!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
        f.rps(),
        f.rps() / baseline,
        f.p50_ms,
        f.p95_ms,
        f.p99_ms,
        f.cpu_us_per_request.map_or("-".into(), |c| format!("{c:.0}")),
        f.errors
    )
}

#[allow(clippy::too_many_arguments)]
async fn run(
    patients: u64,
    seed: u64,
    per_bundle: u64,
    seconds: u64,
    connections: u64,
    bastion: PathBuf,
    postgres: String,
    report: PathBuf,
) {
    assert!(bastion.exists(), "{} not found: build it first with cargo build --release", bastion.display());
    let bastion = bastion.canonicalize().expect("bastion path");
    let work = std::env::temp_dir().join(format!("bastion-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&work).unwrap();
    let load_before = load_average();
    let bundles: Vec<String> = dataset::dataset(seed, patients, per_bundle).iter().map(Value::to_string).collect();
    let mut by_type = std::collections::BTreeMap::new();
    for b in &bundles {
        let v: Value = serde_json::from_str(b).unwrap();
        for e in v["entry"].as_array().unwrap() {
            *by_type.entry(e["resource"]["resourceType"].as_str().unwrap().to_string()).or_insert(0u64) += 1;
        }
    }
    let total: u64 = by_type.values().sum();
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections as usize).build().unwrap();

    // The baseline, measured by the same tool.
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("baseline");
    let base_srv = spawn_listening(cmd);
    let url = format!("{}/fhir/Patient/p1", base_srv.root);
    let baseline = load::run(
        &client,
        Arc::new(move |_, _| load::Req { method: reqwest::Method::GET, url: url.clone(), body: None, form: false }),
        connections,
        Duration::from_secs(2),
        Duration::from_secs(seconds),
        Some(base_srv.child.id()),
    )
    .await;
    drop(base_srv);

    let mut results = Vec::new();
    let sqlite_url = format!("sqlite://{}/bench.db", work.display());
    results.push(bench_backend("SQLite", &sqlite_url, &bastion, &bundles, &client, connections, seconds, &work).await);
    let mut pg_note = String::new();
    if postgres != "none" {
        let db = format!("bastion_bench_{}", uuid::Uuid::new_v4().simple());
        match pg_admin(&postgres, &format!("CREATE DATABASE {db}")).await {
            Ok(()) => {
                let head = postgres.rsplit_once('/').map(|(h, _)| h.to_string()).unwrap_or_default();
                results.push(
                    bench_backend(
                        "PostgreSQL",
                        &format!("{head}/{db}"),
                        &bastion,
                        &bundles,
                        &client,
                        connections,
                        seconds,
                        &work,
                    )
                    .await,
                );
                let _ = pg_admin(&postgres, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
            }
            Err(e) => pg_note = format!("PostgreSQL was not measured: {e}\n"),
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let load_after = load_average();

    let b = baseline.rps();
    let mut md = String::new();
    md.push_str("# Benchmark report\n\n");
    md.push_str("Produced by the harness in `bench/` (see `bench/README.md`); figures are from one run, and each is also given as a ratio to the trivial axum handler measured by the same load tool in the same run, since absolute numbers move with the machine's load.\n\n");
    md.push_str(&format!(
        "- Command: `cargo build --release && target/release/bastion-bench run --patients {patients} --seed {seed} --per-bundle {per_bundle} --seconds {seconds} --connections {connections}`\n"
    ));
    md.push_str(&format!("- Machine: {}\n", machine()));
    md.push_str(&format!(
        "- Load average (1/5/15 min, /proc/loadavg) before the run: {load_before}; after: {load_after} (other jobs on the machine move absolute figures; the ratios to the baseline less so)\n"
    ));
    md.push_str(&format!(
        "- Date: {}\n",
        std::process::Command::new("date")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    ));
    md.push_str(&format!(
        "- Dataset: {patients} synthetic patients (seed {seed}), {total} resources in {} transaction Bundles of {per_bundle} patients: {}\n",
        bundles.len(),
        by_type.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ")
    ));
    md.push_str(&format!("- Load: {connections} keep-alive connections, closed loop, 2 s warm-up then {seconds} s measured per scenario; read = GET Patient/{{id}} over the imported patients, create = POST Patient, update = PUT Patient/{{id}}\n\n"));
    md.push_str(&pg_note);
    md.push_str("| scenario | req/s | ratio to baseline | p50 ms | p95 ms | p99 ms | server CPU-µs/req | errors |\n|---|---|---|---|---|---|---|---|\n");
    md.push_str(&row("baseline: fixed body, trivial axum handler", &baseline, b));
    md.push('\n');
    for r in &results {
        md.push_str(&row(&format!("{}: read by id", r.name), &r.read, b));
        md.push('\n');
        md.push_str(&row(&format!("{}: create", r.name), &r.create, b));
        md.push('\n');
        md.push_str(&row(&format!("{}: update", r.name), &r.update, b));
        md.push('\n');
    }
    md.push_str("\n| backend | transaction import (resources/s) | resources | seconds |\n|---|---|---|---|\n");
    for r in &results {
        md.push_str(&format!(
            "| {} | {:.0} | {} | {:.1} |\n",
            r.name,
            r.import_resources as f64 / r.import_seconds,
            r.import_resources,
            r.import_seconds
        ));
    }
    md.push_str("\n| backend | search (4 connections, `{p}` = a random patient) | req/s | p50 ms | p95 ms | errors |\n|---|---|---|---|---|---|\n");
    for r in &results {
        for (q, f) in &r.searches {
            md.push_str(&format!(
                "| {} | `{q}` | {:.0} | {:.2} | {:.2} | {} |\n",
                r.name,
                f.rps(),
                f.p50_ms,
                f.p95_ms,
                f.errors
            ));
        }
    }
    for r in &results {
        if let Some(bytes) = r.db_bytes {
            md.push_str(&format!(
                "\n{} database after the run: {:.1} MiB, {:.0} bytes per imported resource (resource, history and every index).\n",
                r.name,
                bytes as f64 / 1_048_576.0,
                bytes as f64 / r.import_resources as f64
            ));
        }
    }
    md.push_str("\n## Targets\n\n");
    if let Some(s) = results.iter().find(|r| r.name == "SQLite") {
        let ratio = s.read.rps() / b;
        md.push_str(&format!(
            "- read-by-id on SQLite at least 40% of the baseline: {:.0}% ({})\n",
            ratio * 100.0,
            if ratio >= 0.4 { "met" } else { "not met" }
        ));
        let import = s.import_resources as f64 / s.import_seconds;
        md.push_str(&format!(
            "- transaction import at least 5,000 resources/s on SQLite: {import:.0} ({})\n",
            if import >= 5000.0 { "met" } else { "not met" }
        ));
        let patient_scoped: Vec<&(String, load::Figures)> =
            s.searches.iter().filter(|(q, _)| q.contains("{p}")).collect();
        let worst = patient_scoped.iter().map(|(_, f)| f.p95_ms).fold(0.0, f64::max);
        md.push_str(&format!(
            "- search: p95 under 50 ms for the patient-scoped queries on SQLite: worst {worst:.1} ms ({})\n",
            if worst < 50.0 { "met" } else { "not met" }
        ));
    }
    std::fs::write(&report, &md).unwrap();
    println!("{md}");
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match cli.command {
        Cmd::Gen { patients, seed, per_bundle, format, out } => {
            std::fs::create_dir_all(&out).unwrap();
            let mut written = 0usize;
            match format {
                Format::Transaction => {
                    for (i, b) in dataset::dataset(seed, patients, per_bundle).iter().enumerate() {
                        written += b["entry"].as_array().map_or(0, Vec::len);
                        std::fs::write(out.join(format!("bundle-{i:05}.json")), b.to_string()).unwrap();
                    }
                }
                Format::Ndjson => {
                    for (rtype, resources) in dataset::ndjson(seed, patients) {
                        let mut text = String::new();
                        for r in &resources {
                            text.push_str(&r.to_string());
                            text.push('\n');
                        }
                        written += resources.len();
                        std::fs::write(out.join(format!("{rtype}.ndjson")), text).unwrap();
                    }
                }
            }
            eprintln!("{patients} patients, {written} resources written to {}", out.display());
        }
        Cmd::Load(args) => {
            if let Err(e) = rt.block_on(scenario::main(args)) {
                eprintln!("bastion-bench load: {e}");
                std::process::exit(2);
            }
        }
        Cmd::Baseline { listen } => rt.block_on(baseline(&listen)),
        Cmd::Run { patients, seed, per_bundle, seconds, connections, bastion, postgres, report } => {
            rt.block_on(run(patients, seed, per_bundle, seconds, connections, bastion, postgres, report))
        }
    }
}
