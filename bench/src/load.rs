//! A small closed-loop load tool: N connections, each sending its next request when the last
//! one answered, for a fixed time after a warm-up. Loopback targets only. It measures
//! requests/s, latency percentiles, errors (any non-2xx), and the server's CPU time per
//! request from /proc.
//!
//! Every run is bounded twice: by time (warm-up + measured seconds) and by count (a cap on
//! the measured requests, and a hard cap per connection), so it always ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One request to send.
pub struct Req {
    pub method: reqwest::Method,
    pub url: String,
    pub body: Option<String>,
    /// The body is a form (the token endpoint), not FHIR JSON.
    pub form: bool,
}

/// Builds the `n`-th request of a worker.
pub type MakeReq = Arc<dyn Fn(u64, u64) -> Req + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub cpu_us_per_request: Option<f64>,
    /// Entries in the successful responses' Bundles, when asked for (transactions).
    pub resources: u64,
}

impl Figures {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn resources_per_second(&self) -> f64 {
        self.resources as f64 / self.seconds
    }
}

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`; 100 on Linux in practice).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1_000_000.0 / clock_ticks())
}

/// The host of an `http://` URL when it is a loopback address (127.0.0.0/8, ::1, localhost).
pub fn loopback_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    let ok =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ok.then_some(host)
}

pub fn assert_loopback(url: &str) {
    assert!(loopback_host(url).is_some(), "load is only ever sent to loopback http:// targets, not to {url}");
}

/// How one load run is bounded and what it records.
#[derive(Debug, Clone)]
pub struct Options {
    pub connections: u64,
    pub warmup: Duration,
    pub measure: Duration,
    /// Stop after this many measured requests (if reached before `measure` is over).
    pub max_requests: Option<u64>,
    /// Read /proc/PID/stat of this process before and after the measured phase.
    pub server_pid: Option<u32>,
    /// Count the entries of each successful response Bundle (transaction throughput).
    pub count_entries: bool,
}

pub async fn run(
    client: &reqwest::Client,
    make: MakeReq,
    connections: u64,
    warmup: Duration,
    measure: Duration,
    server_pid: Option<u32>,
) -> Figures {
    let opts = Options { connections, warmup, measure, max_requests: None, server_pid, count_entries: false };
    run_with(client, make, &opts).await
}

/// Entries of a Bundle body (0 when it is not one).
fn entries(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("entry").and_then(|e| e.as_array()).map(|a| a.len() as u64))
        .unwrap_or(0)
}

pub async fn run_with(client: &reqwest::Client, make: MakeReq, opts: &Options) -> Figures {
    let Options { connections, warmup, measure, max_requests, server_pid, count_entries } = opts.clone();
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(AtomicU64::new(0));
    let cap = max_requests.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let (client, make, recording, stop, recorded) =
            (client.clone(), make.clone(), recording.clone(), stop.clone(), recorded.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut resources = 0u64;
            let mut n = 0u64;
            // A hard cap on the count too: the loop always ends.
            while !stop.load(Ordering::Relaxed) && n < 50_000_000 {
                let r = make(worker, n);
                n += 1;
                assert_loopback(&r.url);
                let mut b = client.request(r.method, &r.url);
                if let Some(body) = r.body {
                    let ct = if r.form { "application/x-www-form-urlencoded" } else { "application/fhir+json" };
                    b = b.header("Content-Type", ct).body(body);
                }
                let t = Instant::now();
                let (ok, got) = match b.send().await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let body = resp.bytes().await;
                        let got = match (&body, ok && count_entries) {
                            (Ok(bytes), true) => entries(bytes),
                            _ => 0,
                        };
                        (ok && body.is_ok(), got)
                    }
                    Err(_) => (false, 0),
                };
                if recording.load(Ordering::Relaxed) {
                    if recorded.fetch_add(1, Ordering::Relaxed) >= cap {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    lat.push(t.elapsed().as_micros() as u32);
                    resources += got;
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (lat, errors, resources)
        }));
    }
    let until = |deadline: Instant, stop: Arc<AtomicBool>| async move {
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    until(Instant::now() + warmup, stop.clone()).await;
    let cpu0 = server_pid.and_then(cpu_micros);
    let start = Instant::now();
    recording.store(true, Ordering::Relaxed);
    until(start + measure, stop.clone()).await;
    recording.store(false, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let cpu1 = server_pid.and_then(cpu_micros);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    let mut resources = 0;
    for t in tasks {
        let (lat, e, r) = t.await.expect("load worker");
        all.extend(lat);
        errors += e;
        resources += r;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).map_or(0.0, |v| *v as f64 / 1000.0)
    };
    let requests = all.len() as u64;
    Figures {
        requests,
        errors,
        seconds,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        cpu_us_per_request: match (cpu0, cpu1) {
            (Some(a), Some(b)) if requests > 0 => Some((b - a) / requests as f64),
            _ => None,
        },
        resources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        for ok in ["http://127.0.0.1:8080/fhir", "http://127.1.2.3/x", "http://localhost:1", "http://[::1]:8080/fhir"] {
            assert!(loopback_host(ok).is_some(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8080/fhir",
            "http://127.0.0.1.example.com/fhir",
            "http://127.example.com/",
            "http://user@127.0.0.1/",
            "https://example.org/fhir",
            "http://[::2]:80/",
            "ftp://127.0.0.1/",
        ] {
            assert!(loopback_host(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn counts_bundle_entries() {
        assert_eq!(entries(br#"{"resourceType":"Bundle","entry":[{},{},{}]}"#), 3);
        assert_eq!(entries(b"not json"), 0);
    }
}
