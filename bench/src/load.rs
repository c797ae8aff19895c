//! A small closed-loop load tool: N connections, each sending its next request when the last
//! one answered, for a fixed time after a warm-up. Loopback targets only. It measures
//! requests/s, latency percentiles, errors (any non-2xx), and the server's CPU time per
//! request from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One request to send.
pub struct Req {
    pub method: reqwest::Method,
    pub url: String,
    pub body: Option<String>,
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
}

impl Figures {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// utime + stime of a process, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1_000_000.0 / 100.0)
}

pub fn assert_loopback(url: &str) {
    let host = url.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()).unwrap_or("");
    assert!(
        host.starts_with("127.") || host == "localhost" || host == "[::1]",
        "load is only ever sent to loopback, not to {host}"
    );
}

pub async fn run(
    client: &reqwest::Client,
    make: MakeReq,
    connections: u64,
    warmup: Duration,
    measure: Duration,
    server_pid: Option<u32>,
) -> Figures {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let (client, make, recording, stop) = (client.clone(), make.clone(), recording.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            // A hard cap on the count too: the loop always ends.
            while !stop.load(Ordering::Relaxed) && n < 50_000_000 {
                let r = make(worker, n);
                n += 1;
                assert_loopback(&r.url);
                let mut b = client.request(r.method, &r.url);
                if let Some(body) = r.body {
                    b = b.header("Content-Type", "application/fhir+json").body(body);
                }
                let t = Instant::now();
                let ok = match b.send().await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                if recording.load(Ordering::Relaxed) {
                    lat.push(t.elapsed().as_micros() as u32);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(warmup).await;
    let cpu0 = server_pid.and_then(cpu_micros);
    let start = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(measure).await;
    recording.store(false, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let cpu1 = server_pid.and_then(cpu_micros);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("load worker");
        all.extend(lat);
        errors += e;
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
    }
}
