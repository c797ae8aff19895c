//! `bastion-bench load`: the load tool on its own, against any FHIR base URL on loopback.
//!
//! Scenarios: `read` (GET Patient/{id} over a list of ids), `create` (POST Patient),
//! `token` (client_credentials grants at the token endpoint, with `--client ID:SECRET`),
//! `update` (PUT Patient/{id}, each connection on its own slice of ids, so no two
//! connections write the same resource), `transaction` (POST transaction Bundles, reporting
//! resources/s as well) and `get` (one fixed path, `--path`, for searches and operations). The same code measures every scenario of `bastion-bench run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{dataset, load};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Read,
    Create,
    Update,
    Transaction,
    Token,
    /// GET one fixed path (`--path`, relative to the base) over and over: a search, an
    /// operation.
    Get,
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// FHIR base URL; loopback only, e.g. http://127.0.0.1:8080/fhir.
    #[arg(long)]
    pub url: String,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub warmup: u64,
    /// Measured seconds at most.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// Measured requests at most (for `transaction`: by default each Bundle once).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Server process id: its utime+stime over the measured phase gives CPU-µs per request.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Patient ids for read/update, one per line; without it, `--prepare` patients are created
    /// first (not measured).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    pub prepare: u64,
    /// Bearer token sent with every request (Bastion answers the FHIR API only with one).
    #[arg(long)]
    pub token: Option<String>,
    /// The path for the `get` scenario, relative to the base (`Observation?subject=Patient/p1`).
    #[arg(long)]
    pub path: Option<String>,
    /// `ID:SECRET` of a confidential client, for the `token` scenario (HTTP Basic).
    #[arg(long)]
    pub client: Option<String>,
    /// Directory of transaction Bundles (`bastion-bench gen --format transaction`); without it,
    /// Bundles are generated in memory from --patients/--seed/--per-bundle.
    #[arg(long)]
    pub bundles: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub patients: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub per_bundle: u64,
    /// Print the figures as one JSON object instead of a table row.
    #[arg(long)]
    pub json: bool,
}

/// The id a create answered with: the Location header (`.../Type/id/_history/v`) or the body.
pub fn created_id(location: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(loc) = location {
        let parts: Vec<&str> = loc.split('/').collect();
        if let Some(i) = parts.iter().rposition(|p| *p == "_history") {
            return i.checked_sub(1).map(|j| parts[j].to_string());
        }
        return parts.last().filter(|s| !s.is_empty()).map(|s| s.to_string());
    }
    serde_json::from_slice::<Value>(body).ok()?.get("id")?.as_str().map(str::to_string)
}

/// A body for a new Patient, varied by connection and sequence number.
pub fn new_patient(worker: u64, n: u64) -> String {
    json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:bastion:bench:mrn", "value": format!("LOAD{worker:03}-{n:09}")}],
        "name": [{"family": format!("Load{worker}"), "given": [format!("N{n}")]}],
        "gender": "other"})
    .to_string()
}

/// The update of one Patient (the same `id` in the body as in the URL).
pub fn updated_patient(id: &str, n: u64) -> String {
    json!({"resourceType": "Patient", "id": id, "gender": if n.is_multiple_of(2) { "female" } else { "male" }, "active": true})
        .to_string()
}

/// A spread-out index into a list of `len` items for the `n`-th request of `worker`.
pub fn spread(worker: u64, n: u64, len: usize) -> usize {
    ((worker * 7919 + n * 104_729) % len.max(1) as u64) as usize
}

/// The id a connection updates next: connection `w` stays within its own slice.
pub fn own_slice(ids: &[String], connections: u64, worker: u64, n: u64) -> &str {
    let slice = (ids.len() as u64 / connections).max(1);
    &ids[((worker * slice + n % slice) % ids.len() as u64) as usize]
}

async fn prepare_ids(client: &reqwest::Client, base: &str, count: u64) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let r = client
            .post(format!("{base}/Patient"))
            .header("Content-Type", "application/fhir+json")
            .body(new_patient(999, n))
            .send()
            .await
            .map_err(|e| format!("preparing patients: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("preparing patients: POST Patient answered {}", r.status()));
        }
        let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        ids.push(created_id(loc.as_deref(), &body).ok_or("a created Patient without an id")?);
    }
    Ok(ids)
}

fn read_bundles(dir: &PathBuf) -> Result<Vec<String>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))).collect()
}

pub async fn main(a: LoadArgs) -> Result<(), String> {
    let base = a.url.trim_end_matches('/').to_string();
    if load::loopback_host(&base).is_none() {
        return Err(format!(
            "refusing to send load to {base}: only http:// loopback targets (127.0.0.0/8, ::1, localhost)"
        ));
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = &a.token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().map_err(|_| "--token is not a valid header value".to_string())?,
        );
    }
    if let Some(c) = &a.client {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(c);
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {basic}").parse().map_err(|_| "--client is not a valid header value".to_string())?,
        );
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.connections as usize)
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .map_err(|e| e.to_string())?;
    let mut max_requests = a.requests;
    let mut count_entries = false;
    let make: load::MakeReq = match a.scenario {
        Scenario::Read | Scenario::Update => {
            let ids: Vec<String> = match &a.ids {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|e| format!("{}: {e}", f.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => prepare_ids(&client, &base, a.prepare.max(1)).await?,
            };
            if ids.is_empty() {
                return Err("no ids to read or update".into());
            }
            let ids = Arc::new(ids);
            let (b, connections) = (base.clone(), a.connections);
            if a.scenario == Scenario::Read {
                Arc::new(move |w, n| load::Req {
                    method: reqwest::Method::GET,
                    url: format!("{b}/Patient/{}", ids[spread(w, n, ids.len())]),
                    body: None,
                    form: false,
                })
            } else {
                Arc::new(move |w, n| {
                    let id = own_slice(&ids, connections, w, n);
                    load::Req {
                        method: reqwest::Method::PUT,
                        url: format!("{b}/Patient/{id}"),
                        body: Some(updated_patient(id, n)),
                        form: false,
                    }
                })
            }
        }
        Scenario::Get => {
            let Some(path) = a.path.clone() else { return Err("the get scenario needs --path".into()) };
            let url = format!("{base}/{}", path.trim_start_matches('/'));
            Arc::new(move |_, _| load::Req { method: reqwest::Method::GET, url: url.clone(), body: None, form: false })
        }
        Scenario::Token => {
            if a.client.is_none() {
                return Err("the token scenario needs --client ID:SECRET".into());
            }
            let url = format!("{}/auth/token", base.strip_suffix("/fhir").unwrap_or(&base));
            Arc::new(move |_, _| load::Req {
                method: reqwest::Method::POST,
                url: url.clone(),
                body: Some("grant_type=client_credentials&scope=system%2F%2A.rs".into()),
                form: true,
            })
        }
        Scenario::Create => {
            let b = base.clone();
            Arc::new(move |w, n| load::Req {
                method: reqwest::Method::POST,
                url: format!("{b}/Patient"),
                body: Some(new_patient(w, n)),
                form: false,
            })
        }
        Scenario::Transaction => {
            let bundles: Vec<String> = match &a.bundles {
                Some(dir) => read_bundles(dir)?,
                None => dataset::dataset(a.seed, a.patients, a.per_bundle).iter().map(Value::to_string).collect(),
            };
            if bundles.is_empty() {
                return Err("no transaction Bundles".into());
            }
            max_requests = Some(max_requests.unwrap_or(bundles.len() as u64));
            count_entries = true;
            let (b, bundles, next) = (base.clone(), Arc::new(bundles), Arc::new(AtomicU64::new(0)));
            // Bundles are taken in turn and start again from the first when all were sent:
            // their entries are POSTs, so a second round only adds data.
            Arc::new(move |_, _| {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % bundles.len();
                load::Req { method: reqwest::Method::POST, url: b.clone(), body: Some(bundles[i].clone()), form: false }
            })
        }
    };
    let opts = load::Options {
        connections: a.connections,
        warmup: Duration::from_secs(a.warmup),
        measure: Duration::from_secs(a.seconds),
        max_requests,
        server_pid: a.pid,
        count_entries,
    };
    let f = load::run_with(&client, make, &opts).await;
    let name = format!("{:?}", a.scenario).to_lowercase();
    if a.json {
        println!(
            "{}",
            json!({"scenario": name, "requests": f.requests, "seconds": f.seconds, "requests_per_second": f.rps(),
                "p50_ms": f.p50_ms, "p95_ms": f.p95_ms, "p99_ms": f.p99_ms, "errors": f.errors,
                "server_cpu_us_per_request": f.cpu_us_per_request,
                "resources": f.resources, "resources_per_second": f.resources_per_second()})
        );
    } else {
        println!(
            "| scenario | requests | req/s | resources/s | p50 ms | p95 ms | p99 ms | server CPU-µs/req | errors |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {name} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            f.requests,
            f.rps(),
            if count_entries { format!("{:.0}", f.resources_per_second()) } else { "-".into() },
            f.p50_ms,
            f.p95_ms,
            f.p99_ms,
            f.cpu_us_per_request.map_or("-".into(), |c| format!("{c:.0}")),
            f.errors
        );
    }
    if f.errors > 0 {
        eprintln!("{} of {} requests failed (non-2xx or transport error)", f.errors, f.requests);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_a_create() {
        assert_eq!(created_id(Some("http://127.0.0.1:1/fhir/Patient/abc/_history/1"), b""), Some("abc".into()));
        assert_eq!(created_id(Some("http://127.0.0.1:1/fhir/Patient/abc"), b""), Some("abc".into()));
        assert_eq!(created_id(None, br#"{"resourceType":"Patient","id":"x1"}"#), Some("x1".into()));
        assert_eq!(created_id(None, b""), None);
    }

    #[test]
    fn update_slices_do_not_overlap() {
        let ids: Vec<String> = (0..64).map(|i| i.to_string()).collect();
        let mut owner = std::collections::HashMap::new();
        for w in 0..16 {
            for n in 0..100 {
                let id = own_slice(&ids, 16, w, n);
                assert_eq!(*owner.entry(id.to_string()).or_insert(w), w, "{id}");
            }
        }
    }
}
