//! What a write does to the labels and tags the server holds, and which labels stop a write.
//!
//! - the creating organization's tag (`meta.tag`, [`stamp_organization`]): set by the server,
//!   never by a client;
//! - security labels (`meta.security`, [`keep_held_labels`]): only a label admin may remove or
//!   lower them;
//! - labels that mean "do not store this" ([`check_storable_labels`]);
//! - whether a search asks for test data ([`test_data`]).
//!
//! What it is not: who may *see* a label (bastion-policy's labels.rs).

use bastion_fhir::labels::{
    ACT_CODE_SYSTEM as ACT_CODE, Confidentiality, OBSERVATION_VALUE_SYSTEM as OBSERVATION_VALUE,
};
use bastion_fhir::{Issue, IssueType};
use bastion_policy::TestData;
use bastion_store::StoredVersion;
use serde_json::Value;

use crate::error::ApiError;

/// The organization a resource was created within, held by the server in `meta.tag` under
/// [`bastion_policy::ORGANIZATION_TAG_SYSTEM`]: taken from the creating caller on create,
/// carried over from the stored version on every later write. Whatever a client writes under
/// that system is dropped, so the tag cannot be forged, moved or removed through the API.
pub(crate) fn stamp_organization(organization: Option<&str>, body: &mut Value, old: Option<&StoredVersion>) {
    use bastion_policy::ORGANIZATION_TAG_SYSTEM as SYSTEM;
    let is_stamp = |t: &Value| t.get("system").and_then(Value::as_str) == Some(SYSTEM);
    let held: Vec<Value> = match old.and_then(|o| o.body.as_deref()) {
        // A cheap scan first: most stored resources carry no stamp.
        Some(bytes) if !bastion_fhir::labels::bytes_contain(bytes, SYSTEM.as_bytes()) => Vec::new(),
        Some(bytes) => serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.pointer("/meta/tag").and_then(Value::as_array).cloned())
            .map(|tags| tags.into_iter().filter(is_stamp).collect())
            .unwrap_or_default(),
        None => organization.map(|o| serde_json::json!({"system": SYSTEM, "code": o})).into_iter().collect(),
    };
    let Some(resource) = body.as_object_mut() else { return };
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        if let Some(tags) = meta.get_mut("tag").and_then(Value::as_array_mut) {
            tags.retain(|t| !is_stamp(t));
            if tags.is_empty() {
                meta.remove("tag");
            }
        }
        if meta.is_empty() && held.is_empty() {
            resource.remove("meta");
        }
    }
    if held.is_empty() {
        return;
    }
    let meta = resource.entry("meta").or_insert_with(|| Value::Object(Default::default()));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| Value::Array(Vec::new()));
        if let Some(tags) = tags.as_array_mut() {
            tags.extend(held);
        }
    }
}

/// Does a search ask for test data (`_security=...|HTEST`)? Otherwise it leaves it out.
pub(crate) fn test_data(params: &[(String, String)]) -> TestData {
    let asks = params.iter().any(|(k, v)| {
        k == "_security" && v.split(',').any(|item| item.rsplit('|').next() == Some(bastion_fhir::labels::TEST_DATA))
    });
    if asks { TestData::Included } else { TestData::Excluded }
}

/// A label as `system|code`, for comparing and reporting.
fn label_key(l: &Value) -> String {
    format!(
        "{}|{}",
        l.get("system").and_then(Value::as_str).unwrap_or(""),
        l.get("code").and_then(Value::as_str).unwrap_or("")
    )
}

/// The labels an update stores: a label admin's as written; anyone else's write keeps every
/// label the server holds (a PUT or PATCH cannot remove or lower one) and may add labels or
/// raise the confidentiality. Returns `(before, after)` when the stored labels change.
pub(crate) fn keep_held_labels(
    label_admin: bool,
    body: &mut Value,
    old: Option<&StoredVersion>,
) -> Option<(Vec<String>, Vec<String>)> {
    let old_body = old.filter(|o| !o.is_deleted()).and_then(|o| o.body.as_deref())?;
    let held: Vec<Value> = if bastion_fhir::labels::bytes_contain(old_body, b"\"security\"") {
        serde_json::from_slice::<Value>(old_body)
            .ok()
            .and_then(|v| v.pointer("/meta/security").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let written: Vec<Value> = body.pointer("/meta/security").and_then(Value::as_array).cloned().unwrap_or_default();
    let stored = if label_admin {
        written.clone()
    } else {
        let conf = |l: &Value| {
            (l.get("system").and_then(Value::as_str) == Some(bastion_fhir::labels::CONFIDENTIALITY_SYSTEM))
                .then(|| l.get("code").and_then(Value::as_str).and_then(Confidentiality::parse))
                .flatten()
        };
        let highest = held.iter().chain(&written).filter_map(conf).max();
        let mut out: Vec<Value> = Vec::new();
        for l in held.iter().chain(&written) {
            let keep = match conf(l) {
                Some(c) => Some(c) == highest && !out.iter().any(|o| conf(o).is_some()),
                None => !out.iter().any(|o| label_key(o) == label_key(l)),
            };
            if keep {
                out.push(l.clone());
            }
        }
        out
    };
    let keys = |ls: &[Value]| {
        let mut k: Vec<String> = ls.iter().map(label_key).collect();
        k.sort();
        k.dedup();
        k
    };
    if stored != written {
        set_security(body, stored.clone());
    }
    let (before, after) = (keys(&held), keys(&stored));
    (before != after).then_some((before, after))
}

fn set_security(body: &mut Value, labels: Vec<Value>) {
    let Some(resource) = body.as_object_mut() else { return };
    let meta = resource.entry("meta").or_insert_with(|| Value::Object(Default::default()));
    if let Some(meta) = meta.as_object_mut() {
        if labels.is_empty() {
            meta.remove("security");
        } else {
            meta.insert("security".into(), Value::Array(labels));
        }
    }
    if resource.get("meta").and_then(Value::as_object).is_some_and(|m| m.is_empty()) {
        resource.remove("meta");
    }
}

/// Labels that say a resource must not be stored as it is: `DELAU` (delete after use: never
/// persisted), and `REDACTED`, `MASKED`, `SUBSETTED` (an incomplete copy, as this server or
/// another hands out, which must never overwrite or stand for the full record). 422.
pub(crate) fn check_storable_labels(body: &Value) -> Result<(), ApiError> {
    let labelled = |list: &str, system: &str, codes: &[&str]| {
        body.pointer(&format!("/meta/{list}")).and_then(Value::as_array).is_some_and(|labels| {
            labels.iter().any(|l| {
                l.get("system").and_then(Value::as_str) == Some(system)
                    && l.get("code").and_then(Value::as_str).is_some_and(|c| codes.contains(&c))
            })
        })
    };
    if labelled("security", ACT_CODE, &["DELAU"]) {
        return Err(ApiError::Unprocessable(vec![
            Issue::error(
                IssueType::Processing,
                "the resource is labelled DELAU (delete after use) and is never stored",
            )
            .at("meta.security"),
        ]));
    }
    for list in ["security", "tag"] {
        if labelled(list, OBSERVATION_VALUE, &["REDACTED", "MASKED", "SUBSETTED"]) {
            return Err(ApiError::Unprocessable(vec![
                Issue::error(
                    IssueType::Processing,
                    "the resource is a redacted, masked or subsetted copy and cannot be stored as a record",
                )
                .at(format!("meta.{list}")),
            ]));
        }
    }
    Ok(())
}
