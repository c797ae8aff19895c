//! Batch and transaction Bundles (`POST [base]`).
//!
//! Each entry is parsed by the same parser as a plain request ([`crate::interaction`]) and
//! executed by the same engine, so an entry can do nothing a request could not. A
//! transaction runs every entry in one store transaction (all or nothing), resolves
//! `urn:uuid:` fullUrls and conditional references first, and processes entries in the
//! order the spec prescribes: DELETE, POST, PUT/PATCH, then GET/HEAD. A batch gives every
//! entry its own transaction and its own status.

use std::collections::HashMap;

use axum::http::StatusCode;
use base64::Engine as _;
use bastion_fhir::bundle::BundleWriter;
use bastion_fhir::primitives::Instant;
use bastion_fhir::{Issue, IssueType};
use bastion_search::SearchQuery;
use bastion_store::{StoreTx, interactions};
use serde_json::{Value, json};

use crate::engine::{Engine, Reply, ReplyBody, RequestContext};
use crate::error::ApiError;
use crate::interaction::{self, Body, Conditions, Interaction, Target, parse_etag};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Batch,
    Transaction,
}

/// One parsed entry.
struct Entry {
    index: usize,
    full_url: Option<String>,
    interaction: Interaction,
    ctx: RequestContext,
}

/// Processing rank of an entry's method (spec: DELETE, POST, PUT/PATCH, GET/HEAD).
fn rank(i: &Interaction) -> u8 {
    match i {
        Interaction::Delete { .. } => 0,
        Interaction::Create { .. } => 1,
        Interaction::Update { .. } | Interaction::Patch { .. } => 2,
        _ => 3,
    }
}

fn entry_error(index: usize, msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(vec![Issue::error(IssueType::Invalid, msg).at(format!("Bundle.entry[{index}]"))])
}

/// The request URL of an entry relative to the base (absolute URLs on this server's base are
/// accepted too).
fn relative_url<'a>(url: &'a str, base: &str) -> &'a str {
    let url = url.strip_prefix(base).unwrap_or(url);
    url.trim_start_matches('/')
}

fn parse_entry(engine: &Engine, parent: &RequestContext, index: usize, mut entry: Value) -> Result<Entry, ApiError> {
    // Taken out, not copied: a transaction of thousands of resources is not cloned.
    let resource = entry.as_object_mut().and_then(|o| o.remove("resource"));
    let request = entry.get("request").ok_or_else(|| entry_error(index, "entry.request is missing"))?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| entry_error(index, "entry.request.method is missing"))?;
    let url =
        request.get("url").and_then(Value::as_str).ok_or_else(|| entry_error(index, "entry.request.url is missing"))?;
    let url = relative_url(url, &engine.base);
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let body = match (method, resource) {
        ("PATCH", Some(r)) => Some(Body::JsonPatch(patch_from_binary(index, &r)?)),
        (_, Some(r)) => Some(Body::Resource(r)),
        (_, None) => None,
    };
    let interaction = interaction::parse(method, path, query, body).map_err(|e| e.in_entry(index))?;
    if matches!(interaction, Interaction::Bundle { .. }) {
        return Err(entry_error(index, "a Bundle entry cannot itself be a batch or transaction"));
    }
    let text = |k: &str| request.get(k).and_then(Value::as_str).map(str::to_string);
    let if_match = match text("ifMatch") {
        Some(v) => {
            Some(parse_etag(&v).ok_or_else(|| entry_error(index, "entry.request.ifMatch is not a version ETag"))?)
        }
        None => None,
    };
    let if_modified_since = match text("ifModifiedSince") {
        Some(v) => Some(
            Instant::parse_fhir(&v)
                .ok_or_else(|| entry_error(index, "entry.request.ifModifiedSince is not an instant"))?,
        ),
        None => None,
    };
    let ctx = RequestContext {
        access: parent.access.clone(),
        scope: parent.scope.clone(),
        conditions: Conditions {
            if_match,
            if_none_match: text("ifNoneMatch"),
            if_modified_since,
            if_none_exist: text("ifNoneExist"),
        },
        prefer_return: parent.prefer_return,
        strict: parent.strict,
        caller: parent.caller.clone(),
        pending: parent.pending.clone(),
        break_glass_probe: parent.break_glass_probe.clone(),
    };
    let full_url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    Ok(Entry { index, full_url, interaction, ctx })
}

/// A PATCH entry carries its JSON Patch as a Binary resource.
fn patch_from_binary(index: usize, r: &Value) -> Result<Value, ApiError> {
    let ok_type = r.get("resourceType").and_then(Value::as_str) == Some("Binary")
        && r.get("contentType").and_then(Value::as_str).is_some_and(|c| c.starts_with("application/json-patch+json"));
    if !ok_type {
        return Err(entry_error(
            index,
            "a PATCH entry's resource must be a Binary with contentType application/json-patch+json",
        ));
    }
    let data = r.get("data").and_then(Value::as_str).unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| entry_error(index, "the Binary's data is not valid base64"))?;
    serde_json::from_slice(&bytes).map_err(|_| entry_error(index, "the Binary's data is not a JSON Patch document"))
}

/// Replaces every `reference` that names a resolved fullUrl, recursively.
fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = child
                    && let Some(to) = map.get(s.as_str())
                {
                    *s = to.clone();
                    continue;
                }
                rewrite_references(child, map);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rewrite_references(c, map)),
        _ => {}
    }
}

/// Collects conditional references (`Patient?identifier=...`) found in a resource.
fn conditional_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if k == "reference"
                    && let Value::String(s) = child
                    && let Some((t, _)) = s.split_once('?')
                    && !t.contains('/')
                {
                    out.push(s.clone());
                } else {
                    conditional_references(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| conditional_references(c, out)),
        _ => {}
    }
}

fn body_mut(i: &mut Interaction) -> Option<&mut Value> {
    match i {
        Interaction::Create { body, .. } | Interaction::Update { body, .. } => Some(body),
        _ => None,
    }
}

fn status_line(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

/// Renders a reply as `entry.resource` + `entry.response`.
fn render(engine: &Engine, w: &mut BundleWriter, reply: Reply) {
    w.raise_confidentiality(engine.reply_confidentiality(&reply));
    let mut response = json!({"status": status_line(reply.status)});
    if let Some(l) = &reply.location {
        response["location"] = json!(l);
    }
    if let Some(e) = reply.etag() {
        response["etag"] = json!(e);
    }
    if let Some(t) = reply.last_modified {
        response["lastModified"] = json!(t.to_fhir());
    }
    match reply.body {
        ReplyBody::Raw(bytes) => w.entry_raw(None, Some(&bytes), &json!({"response": response})),
        ReplyBody::Json(v) if v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") => {
            response["outcome"] = v;
            w.entry_raw(None, None, &json!({"response": response}));
        }
        ReplyBody::Json(v) => w.entry_value(None, &v, &json!({"response": response})),
        ReplyBody::None => w.entry_raw(None, None, &json!({"response": response})),
    }
}

fn render_error(w: &mut BundleWriter, e: &ApiError) {
    let response = json!({"status": status_line(e.status()), "outcome": e.outcome().to_json()});
    w.entry_raw(None, None, &json!({"response": response}));
}

pub async fn process(engine: &Engine, ctx: &RequestContext, mut body: Value) -> Result<Reply, ApiError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::invalid(
            IssueType::Invalid,
            "only a batch or transaction Bundle may be posted to the base",
            Some("resourceType"),
        ));
    }
    let kind = match body.get("type").and_then(Value::as_str) {
        Some("batch") => Kind::Batch,
        Some("transaction") => Kind::Transaction,
        Some(other) => {
            return Err(ApiError::invalid(
                IssueType::Invalid,
                format!(
                    "a Bundle of type '{other}' cannot be processed at the base; post a batch or transaction (or create it at [base]/Bundle)"
                ),
                Some("Bundle.type"),
            ));
        }
        None => return Err(ApiError::invalid(IssueType::Required, "Bundle.type is missing", Some("Bundle.type"))),
    };
    let entries = match body.as_object_mut().and_then(|o| o.remove("entry")) {
        None => Vec::new(),
        Some(Value::Array(e)) => e,
        Some(_) => {
            return Err(ApiError::invalid(IssueType::Structure, "Bundle.entry must be an array", Some("Bundle.entry")));
        }
    };
    if entries.len() > engine.limits.max_bundle_entries {
        return Err(ApiError::PayloadTooLarge(format!(
            "the Bundle has {} entries; this server accepts at most {}",
            entries.len(),
            engine.limits.max_bundle_entries
        )));
    }
    match kind {
        Kind::Batch => batch(engine, ctx, entries).await,
        Kind::Transaction => transaction(engine, ctx, entries).await,
    }
}

async fn batch(engine: &Engine, ctx: &RequestContext, entries: Vec<Value>) -> Result<Reply, ApiError> {
    let mut results: Vec<Option<Result<Reply, ApiError>>> = (0..entries.len()).map(|_| None).collect();
    let mut parsed = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        match parse_entry(engine, ctx, i, e) {
            Ok(p) => parsed.push(p),
            Err(err) => results[i] = Some(Err(err)),
        }
    }
    parsed.sort_by_key(|e| (rank(&e.interaction), e.index));
    for e in parsed {
        let prefer = e.ctx.prefer_return;
        let r = engine.execute(&e.ctx, e.interaction).await.map(|r| r.apply_prefer(prefer));
        results[e.index] = Some(r);
    }
    let mut w =
        BundleWriter::new(&uuid::Uuid::new_v4().to_string(), &Instant::now().to_fhir(), "batch-response", None, &[]);
    for r in results.into_iter().flatten() {
        match r {
            Ok(reply) => render(engine, &mut w, reply),
            Err(e) => render_error(&mut w, &e),
        }
    }
    Ok(Reply::raw(StatusCode::OK, w.finish()))
}

/// A GET/HEAD entry of a transaction, run once the writes have landed.
pub type DeferredRead = (usize, RequestContext, Interaction);

async fn transaction(engine: &Engine, ctx: &RequestContext, entries: Vec<Value>) -> Result<Reply, ApiError> {
    let mut tx = engine.store.begin().await?;
    let (mut replies, reads) = apply_transaction(engine, ctx, entries, &mut *tx).await?;
    tx.commit().await?;
    // Reads run after the writes have landed, so they see them.
    for (index, c, i) in reads {
        let reply = engine.execute(&c, i).await.map_err(|err| tag(err, index))?;
        replies[index] = Some(reply);
    }
    let mut w = BundleWriter::new(
        &uuid::Uuid::new_v4().to_string(),
        &Instant::now().to_fhir(),
        "transaction-response",
        None,
        &[],
    );
    for r in replies.into_iter().flatten() {
        render(engine, &mut w, r);
    }
    Ok(Reply::raw(StatusCode::OK, w.finish()))
}

/// Applies the writes of a transaction inside `tx` (not committed here) and returns the
/// replies by entry position, plus the reads to run after commit. Also used by `import`.
pub async fn apply_transaction(
    engine: &Engine,
    ctx: &RequestContext,
    entries: Vec<Value>,
    tx: &mut dyn StoreTx,
) -> Result<(Vec<Option<Reply>>, Vec<DeferredRead>), ApiError> {
    let mut parsed =
        entries.into_iter().enumerate().map(|(i, e)| parse_entry(engine, ctx, i, e)).collect::<Result<Vec<_>, _>>()?;
    let entry_count = parsed.len();

    // 1. Decide the identity of every created resource, so references can point at it.
    let mut resolved: HashMap<String, String> = HashMap::new();
    let mut preassigned: HashMap<usize, Option<String>> = HashMap::new(); // None = conditional create matched
    let mut pending = std::collections::BTreeSet::new();
    for e in &parsed {
        match &e.interaction {
            Interaction::Create { resource_type, .. } => {
                let mut id = Some(interactions::new_id());
                let mut target = None;
                if let Some(q) = &e.ctx.conditions.if_none_exist {
                    let mut query = SearchQuery::parse_conditional(resource_type, q)
                        .map_err(|err| ApiError::from(err).in_entry(e.index))?;
                    engine.scope_reached(&e.ctx, &mut query).map_err(|err| err.in_entry(e.index))?;
                    let access = engine.access_of(&e.ctx, resource_type, bastion_policy::Action::Search);
                    let found = tx.find_ids(&access, &query, 2).await?;
                    match found.as_slice() {
                        [] => {}
                        [existing] => {
                            target = Some(existing.clone());
                            id = None;
                        }
                        _ => {
                            return Err(ApiError::PreconditionFailed(format!(
                                "Bundle.entry[{}]: If-None-Exist matches more than one resource",
                                e.index
                            )));
                        }
                    }
                }
                let reference = format!("{resource_type}/{}", target.as_deref().or(id.as_deref()).unwrap_or_default());
                if let Some(f) = &e.full_url
                    && resolved.insert(f.clone(), reference).is_some()
                {
                    return Err(entry_error(e.index, "fullUrl is used by more than one entry"));
                }
                if let Some(id) = &id {
                    pending.insert(format!("{resource_type}/{id}"));
                }
                preassigned.insert(e.index, id);
            }
            Interaction::Update { resource_type, target: Target::Id(id), .. } => {
                if let Some(f) = &e.full_url
                    && f.starts_with("urn:")
                {
                    resolved.insert(f.clone(), format!("{resource_type}/{id}"));
                }
                pending.insert(format!("{resource_type}/{id}"));
            }
            _ => {}
        }
    }
    // References to what this transaction writes resolve before those entries run (each
    // of those writes is authorized on its own).
    let pending = std::sync::Arc::new(pending);
    for e in &mut parsed {
        e.ctx.pending = pending.clone();
    }

    // 2. Resolve conditional references inside the transaction, then rewrite references.
    for e in &mut parsed {
        let Some(body) = body_mut(&mut e.interaction) else { continue };
        let mut conditional = Vec::new();
        conditional_references(body, &mut conditional);
        for c in conditional {
            if resolved.contains_key(&c) {
                continue;
            }
            let (t, q) = c.split_once('?').unwrap_or((&c, ""));
            let mut query =
                SearchQuery::parse_conditional(t, q).map_err(|err| ApiError::from(err).in_entry(e.index))?;
            engine.scope_reached(&e.ctx, &mut query).map_err(|err| err.in_entry(e.index))?;
            let access = engine.access_of(&e.ctx, t, bastion_policy::Action::Search);
            let found = tx.find_ids(&access, &query, 2).await?;
            match found.as_slice() {
                [id] => {
                    resolved.insert(c.clone(), format!("{t}/{id}"));
                }
                [] => {
                    return Err(ApiError::PreconditionFailed(format!(
                        "Bundle.entry[{}]: conditional reference '{c}' matches nothing",
                        e.index
                    )));
                }
                _ => {
                    return Err(ApiError::PreconditionFailed(format!(
                        "Bundle.entry[{}]: conditional reference '{c}' matches more than one resource",
                        e.index
                    )));
                }
            }
        }
        rewrite_references(body, &resolved);
    }

    // 3. Execute in the prescribed order.
    parsed.sort_by_key(|e| (rank(&e.interaction), e.index));
    let mut replies: Vec<Option<Reply>> = (0..entry_count).map(|_| None).collect();
    let mut reads = Vec::new();
    for e in parsed {
        let index = e.index;
        let reply = match e.interaction {
            Interaction::Create { resource_type, body } => match preassigned.remove(&index).flatten() {
                Some(id) => {
                    engine
                        .may(&e.ctx, &resource_type, bastion_policy::Action::Create)
                        .map_err(|err| tag(err, index))?;
                    engine.check_body(&body, &resource_type, None).map_err(|err| err.in_entry(index))?;
                    let mut body = body;
                    engine
                        .check_write(&e.ctx, bastion_policy::Action::Create, &resource_type, "", Some(&mut body), None)
                        .map_err(|err| tag(err, index))?;
                    engine.check_references(tx, &e.ctx, &body).await.map_err(|err| tag(err, index))?;
                    let v = interactions::create(tx, body, Some(id))
                        .await
                        .map_err(|err| ApiError::from(err).in_entry(index))?;
                    engine.written_reply(&e.ctx, StatusCode::CREATED, &v)
                }
                None => {
                    // If-None-Exist matched: report the existing resource, create nothing.
                    engine
                        .write(tx, &e.ctx, Interaction::Create { resource_type, body })
                        .await
                        .map_err(|err| tag(err, index))?
                }
            },
            i if i.is_write() => engine.write(tx, &e.ctx, i).await.map_err(|err| tag(err, index))?,
            i => {
                reads.push((index, e.ctx, i));
                continue;
            }
        };
        replies[index] = Some(reply.apply_prefer(e.ctx.prefer_return));
    }
    Ok((replies, reads))
}

/// Says which entry failed: in the issues' expressions, or in the message.
fn tag(err: ApiError, index: usize) -> ApiError {
    match err {
        e @ (ApiError::BadRequest(_) | ApiError::Unprocessable(_)) => e.in_entry(index),
        ApiError::NotFound(m) => ApiError::NotFound(format!("Bundle.entry[{index}]: {m}")),
        ApiError::Conflict(m) => ApiError::Conflict(format!("Bundle.entry[{index}]: {m}")),
        ApiError::PreconditionFailed(m) => ApiError::PreconditionFailed(format!("Bundle.entry[{index}]: {m}")),
        ApiError::MethodNotAllowed(m) => ApiError::MethodNotAllowed(format!("Bundle.entry[{index}]: {m}")),
        ApiError::UnsupportedMediaType(m) => ApiError::UnsupportedMediaType(format!("Bundle.entry[{index}]: {m}")),
        other => other,
    }
}
