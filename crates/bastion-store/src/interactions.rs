//! The write rules of the FHIR REST API, shared by both backends: id assignment, version
//! numbering, server-managed `meta`, tombstones, `If-Match`. Each function runs inside a
//! caller's [`StoreTx`], so a transaction Bundle is just several calls before one commit.
//!
//! Validation of the body and the HTTP semantics around these calls belong to the caller.

use bastion_fhir::primitives::Instant;
use bastion_search::{IndexRows, extract_index};
use serde_json::{Map, Value};

use crate::{Method, NewVersion, Result, StoreError, StoreTx, StoredVersion};

/// A new server-assigned logical id (random, so it reveals neither time nor count).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Rebuilds the resource with `resourceType`, `id` and `meta` first and the server-managed
/// `meta.versionId` / `meta.lastUpdated` set; everything else keeps the client's order.
fn stamp(body: Value, id: &str, version: u64, at: Instant) -> Value {
    let Value::Object(fields) = body else { return body };
    let mut out = Map::with_capacity(fields.len() + 2);
    let mut meta = match fields.get("meta") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    meta.remove("versionId");
    meta.remove("lastUpdated");
    let mut stamped_meta = Map::with_capacity(meta.len() + 2);
    stamped_meta.insert("versionId".into(), Value::String(version.to_string()));
    stamped_meta.insert("lastUpdated".into(), Value::String(at.to_fhir()));
    stamped_meta.extend(meta);
    if let Some(rt) = fields.get("resourceType") {
        out.insert("resourceType".into(), rt.clone());
    }
    out.insert("id".into(), Value::String(id.to_string()));
    out.insert("meta".into(), Value::Object(stamped_meta));
    for (k, v) in fields {
        if k != "resourceType" && k != "id" && k != "meta" {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

async fn write(
    tx: &mut dyn StoreTx,
    resource_type: &str,
    id: &str,
    version: u64,
    method: Method,
    body: Value,
) -> Result<StoredVersion> {
    let at = Instant::now();
    let stamped = stamp(body, id, version, at);
    let index = extract_index(&stamped);
    let bytes = serde_json::to_vec(&stamped)?;
    let stored = StoredVersion {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version,
        last_updated: at,
        method,
        body: Some(bytes.clone()),
        compartments: index.compartments.clone(),
        seq: 0,
    };
    tx.write_version(NewVersion {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version,
        last_updated: at,
        method,
        body: Some(bytes),
        index,
    })
    .await?;
    Ok(stored)
}

fn check_if_match(expected: Option<u64>, current: Option<&StoredVersion>) -> Result<()> {
    match (expected, current) {
        (None, _) => Ok(()),
        (Some(e), Some(c)) if c.version == e && !c.is_deleted() => Ok(()),
        (Some(e), Some(c)) => Err(StoreError::VersionConflict { expected: e, current: c.version }),
        (Some(e), None) => Err(StoreError::VersionConflict { expected: e, current: 0 }),
    }
}

/// `POST [type]`: creates a new resource with a server-assigned id (`id` given only when a
/// transaction has already chosen one to resolve references).
pub async fn create(tx: &mut dyn StoreTx, body: Value, id: Option<String>) -> Result<StoredVersion> {
    let resource_type = body.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
    let id = id.unwrap_or_else(new_id);
    write(tx, &resource_type, &id, 1, Method::Post, body).await
}

/// `PUT [type]/[id]`: a new version, or the first one (create-on-update) when none exists
/// or the resource was deleted. Returns the version and whether it was created.
pub async fn update(
    tx: &mut dyn StoreTx,
    resource_type: &str,
    id: &str,
    body: Value,
    if_match: Option<u64>,
    method: Method,
) -> Result<(StoredVersion, bool)> {
    let current = tx.current(resource_type, id).await?;
    check_if_match(if_match, current.as_ref())?;
    let created = current.as_ref().is_none_or(StoredVersion::is_deleted);
    let version = current.map_or(1, |c| c.version + 1);
    Ok((write(tx, resource_type, id, version, method, body).await?, created))
}

/// `DELETE [type]/[id]`: writes a tombstone. `None` when there was nothing to delete
/// (never existed, or already deleted), which the REST layer answers as success too.
pub async fn delete(
    tx: &mut dyn StoreTx,
    resource_type: &str,
    id: &str,
    if_match: Option<u64>,
) -> Result<Option<StoredVersion>> {
    let current = tx.current(resource_type, id).await?;
    check_if_match(if_match, current.as_ref())?;
    let Some(current) = current.filter(|c| !c.is_deleted()) else {
        return Ok(None);
    };
    let at = Instant::now();
    let version = current.version + 1;
    // The tombstone stays in the compartments of the version it ends.
    let index = IndexRows { compartments: current.compartments.clone(), ..IndexRows::default() };
    tx.write_version(NewVersion {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version,
        last_updated: at,
        method: Method::Delete,
        body: None,
        index,
    })
    .await?;
    Ok(Some(StoredVersion {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version,
        last_updated: at,
        method: Method::Delete,
        body: None,
        compartments: current.compartments,
        seq: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_puts_server_meta_first_and_keeps_the_rest() {
        let body = json!({"name":[{"family":"X"}],"resourceType":"Patient",
            "meta":{"versionId":"99","profile":["p"],"lastUpdated":"1999-01-01T00:00:00Z"},"id":"old"});
        let s = stamp(body, "new", 3, Instant::from_millis(0));
        let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["resourceType", "id", "meta", "name"]);
        assert_eq!(s["id"], "new");
        assert_eq!(s["meta"]["versionId"], "3");
        assert_eq!(s["meta"]["lastUpdated"], "1970-01-01T00:00:00.000Z");
        assert_eq!(s["meta"]["profile"][0], "p");
    }
}
