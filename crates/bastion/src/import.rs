//! `bastion import`: loads transaction/batch Bundles and NDJSON files straight into the
//! store, through the same validation and write rules as the REST API.
//!
//! Each file lands completely or not at all (one store transaction per file; a batch Bundle
//! is applied atomically here too), and is recorded by its SHA-256 in the same transaction,
//! so re-running the same command after a failure skips what already landed and retries
//! only what did not.

use std::path::{Path, PathBuf};
use std::time::Instant as Clock;

use bastion_server::engine::{Engine, RequestContext};
use bastion_server::{ApiError, Config};
use bastion_store::{Method, interactions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a file did not land: one line per failing entry or line.
struct FileFailure(Vec<String>);

fn describe(e: &ApiError) -> Vec<String> {
    e.outcome()
        .issues
        .iter()
        .map(|i| match &i.expression {
            Some(x) => format!("{x}: {}", i.diagnostics),
            None => i.diagnostics.clone(),
        })
        .collect()
}

const MAX_REPORTED: usize = 50;

async fn import_ndjson(engine: &Engine, text: &str, bar: &ProgressBar) -> Result<Vec<Value>, FileFailure> {
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let lineno = n + 1;
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("line {lineno}: not valid JSON ({e})"));
                continue;
            }
        };
        let rtype = v.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
        if !bastion_fhir::definitions::is_resource_type(&rtype) {
            problems.push(format!("line {lineno}: resourceType missing or unknown"));
            continue;
        }
        let id = v.get("id").and_then(Value::as_str).map(str::to_string);
        if let Err(e) = engine.check_body(&v, &rtype, id.as_deref()) {
            for d in describe(&e) {
                problems.push(format!("line {lineno}: {d}"));
            }
            continue;
        }
        resources.push(v);
        if problems.len() >= MAX_REPORTED {
            break;
        }
    }
    bar.tick();
    if problems.is_empty() { Ok(resources) } else { Err(FileFailure(problems)) }
}

async fn import_file(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    sha: &str,
    bar: &ProgressBar,
) -> Result<u64, FileFailure> {
    let fail = |m: String| FileFailure(vec![m]);
    let text = std::str::from_utf8(bytes).map_err(|_| fail("the file is not UTF-8".into()))?;
    let is_ndjson = path.extension().is_some_and(|e| e == "ndjson" || e == "jsonl");
    let ctx = RequestContext::unrestricted();
    let mut tx = engine.store.begin().await.map_err(|e| fail(format!("storage: {e}")))?;
    let count = if is_ndjson {
        let resources = import_ndjson(engine, text, bar).await?;
        let n = resources.len() as u64;
        for r in resources {
            let rtype = r["resourceType"].as_str().unwrap_or_default().to_string();
            let result = match r.get("id").and_then(Value::as_str).map(str::to_string) {
                Some(id) => interactions::update(&mut *tx, &rtype, &id, r, None, Method::Put).await.map(|_| ()),
                None => interactions::create(&mut *tx, r, None).await.map(|_| ()),
            };
            result.map_err(|e| fail(format!("storage: {e}")))?;
        }
        n
    } else {
        let bundle: Value = serde_json::from_str(text)
            .map_err(|e| fail(format!("not valid JSON (line {}, column {})", e.line(), e.column())))?;
        let kind = bundle.get("type").and_then(Value::as_str);
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle")
            || !matches!(kind, Some("transaction" | "batch"))
        {
            return Err(fail(
                "a .json file must hold a transaction or batch Bundle (use .ndjson for resources)".into(),
            ));
        }
        let mut bundle = bundle;
        let entries = match bundle.as_object_mut().and_then(|o| o.remove("entry")) {
            Some(Value::Array(e)) => e,
            _ => Vec::new(),
        };
        let entry_count = entries.len() as u64;
        let (_, reads) = bastion_server::bundle::apply_transaction(engine, &ctx, entries, &mut *tx)
            .await
            .map_err(|e| FileFailure(describe(&e)))?;
        if !reads.is_empty() {
            return Err(fail("import takes writes only; the Bundle has GET entries".into()));
        }
        entry_count
    };
    let name = path.display().to_string();
    tx.record_import(sha, &name, count).await.map_err(|e| fail(format!("storage: {e}")))?;
    tx.commit().await.map_err(|e| fail(format!("storage: {e}")))?;
    Ok(count)
}

pub async fn run(config: &Config, files: &[PathBuf], quiet: bool) -> Result<(), String> {
    let public_url = config.server.public_url.clone().unwrap_or_else(|| format!("http://{}", config.server.listen));
    let engine = bastion_server::build_engine(config, &public_url).await.map_err(|e| e.to_string())?;
    let total_bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total_bytes) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Clock::now();
    let (mut landed, mut skipped, mut failed, mut resources) = (0, 0, 0, 0u64);
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        bar.set_message(path.display().to_string());
        if engine.store.imported(&sha).await.map_err(|e| e.to_string())? {
            bar.suspend(|| println!("{}: already imported, skipped", path.display()));
            skipped += 1;
        } else {
            match import_file(&engine, path, &bytes, &sha, &bar).await {
                Ok(n) => {
                    resources += n;
                    landed += 1;
                }
                Err(FileFailure(problems)) => {
                    failed += 1;
                    bar.suspend(|| {
                        eprintln!("{}: FAILED, nothing from this file was written:", path.display());
                        for p in problems.iter().take(MAX_REPORTED) {
                            eprintln!("  {p}");
                        }
                    });
                }
            }
        }
        bar.inc(bytes.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    println!(
        "imported {resources} resources from {landed} file(s) in {secs:.1}s ({:.0} resources/s); {skipped} skipped (already imported), {failed} failed",
        resources as f64 / secs
    );
    if failed > 0 {
        Err(format!("{failed} file(s) failed; fix them and re-run the same command (imported files are skipped)"))
    } else {
        Ok(())
    }
}
