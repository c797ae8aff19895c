//! Request -> [`Interaction`]: what the client asked for, parsed and checked before any
//! data is touched. The HTTP edge and every batch/transaction entry go through the same
//! parser, so an entry can do exactly what a request can, and no more.

use bastion_fhir::IssueType;
use bastion_fhir::definitions;
use bastion_fhir::primitives::{Instant, is_valid_id, parse_version_id};
use bastion_search::query::form_pairs;
use bastion_store::HistoryLevel;
use serde_json::Value;

use crate::error::ApiError;

/// The `resource_type` of a system-level search (`GET [base]?_type=...`): not a type.
pub const SYSTEM_SEARCH: &str = "";

/// What `Prefer: return=` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreferReturn {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// Request headers that change what an interaction does.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `If-Match: W/"n"`.
    pub if_match: Option<u64>,
    /// `If-None-Match` on reads: the ETag the client already has.
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<Instant>,
    /// `If-None-Exist` on create.
    pub if_none_exist: Option<String>,
}

/// The body of a write: a resource, or a JSON Patch document.
#[derive(Debug, Clone)]
pub enum Body {
    Resource(Value),
    JsonPatch(Value),
}

/// A PUT/PATCH/DELETE target: one id, or a conditional search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Id(String),
    Search(String),
}

#[derive(Debug, Clone)]
pub enum Interaction {
    Capabilities,
    Read {
        resource_type: String,
        id: String,
    },
    VRead {
        resource_type: String,
        id: String,
        version: u64,
    },
    Create {
        resource_type: String,
        body: Value,
    },
    Update {
        resource_type: String,
        target: Target,
        body: Value,
    },
    Patch {
        resource_type: String,
        target: Target,
        patch: Value,
    },
    Delete {
        resource_type: String,
        target: Target,
    },
    History {
        level: HistoryLevel,
        params: Vec<(String, String)>,
    },
    /// Type-level search, or a Patient compartment search (`Patient/[id]/[type]`).
    Search {
        resource_type: String,
        params: Vec<(String, String)>,
        compartment: Option<String>,
    },
    /// `GET [base]/Patient/[id]/$everything`: the patient's compartment (and what it refers
    /// to), under the caller's access.
    Everything {
        id: String,
        params: Vec<(String, String)>,
    },
    /// `POST [base]` with a batch or transaction Bundle.
    Bundle {
        body: Value,
    },
}

impl Interaction {
    /// Is this a change to stored data (as opposed to a read)?
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Interaction::Create { .. }
                | Interaction::Update { .. }
                | Interaction::Patch { .. }
                | Interaction::Delete { .. }
        )
    }
}

fn resource_type(segment: &str) -> Result<String, ApiError> {
    if definitions::is_resource_type(segment) {
        Ok(segment.to_string())
    } else {
        Err(ApiError::NotFound(format!("'{segment}' is not a resource type this server supports")))
    }
}

fn logical_id(segment: &str) -> Result<String, ApiError> {
    if is_valid_id(segment) {
        Ok(segment.to_string())
    } else {
        Err(ApiError::invalid(
            IssueType::Value,
            "the id in the URL is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)",
            None,
        ))
    }
}

fn version(segment: &str) -> Result<u64, ApiError> {
    // A version id Bastion never issued cannot exist: that is a 404, not a 400.
    parse_version_id(segment).ok_or_else(|| ApiError::NotFound(format!("version '{segment}' does not exist")))
}

fn not_allowed(method: &str, path: &str) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on '{path}'"))
}

/// Parses a request. `path` is relative to the FHIR base, without a leading `/`; `query`
/// is the raw query string (without `?`).
pub fn parse(method: &str, path: &str, query: &str, body: Option<Body>) -> Result<Interaction, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let params = || form_pairs(query);
    let resource_body = |body: Option<Body>| match body {
        Some(Body::Resource(v)) => Ok(v),
        Some(Body::JsonPatch(_)) => {
            Err(ApiError::UnsupportedMediaType("a JSON Patch is only accepted with PATCH".into()))
        }
        None => Err(ApiError::invalid(IssueType::Required, "this interaction needs a resource in the body", None)),
    };
    let conditional = |what: &str| {
        if query.is_empty() {
            Err(ApiError::invalid(IssueType::Required, format!("a conditional {what} needs search parameters"), None))
        } else {
            Ok(Target::Search(query.to_string()))
        }
    };
    match (method, segments.as_slice()) {
        // System-level search: every type, or those `_type` names.
        ("GET" | "HEAD", []) | ("GET" | "HEAD" | "POST", ["_search"]) => {
            Ok(Interaction::Search { resource_type: SYSTEM_SEARCH.into(), params: params(), compartment: None })
        }
        ("POST", []) => Ok(Interaction::Bundle { body: resource_body(body)? }),
        ("GET" | "HEAD", ["metadata"]) => Ok(Interaction::Capabilities),
        (m, ["metadata"]) => Err(not_allowed(m, "metadata")),
        ("GET" | "HEAD", ["_history"]) => Ok(Interaction::History { level: HistoryLevel::System, params: params() }),
        (m, ["_history"]) => Err(not_allowed(m, "_history")),
        ("GET" | "HEAD", [t]) => {
            Ok(Interaction::Search { resource_type: resource_type(t)?, params: params(), compartment: None })
        }
        ("POST", [t]) => Ok(Interaction::Create { resource_type: resource_type(t)?, body: resource_body(body)? }),
        ("PUT", [t]) => Ok(Interaction::Update {
            resource_type: resource_type(t)?,
            target: conditional("update")?,
            body: resource_body(body)?,
        }),
        ("PATCH", [t]) => Ok(Interaction::Patch {
            resource_type: resource_type(t)?,
            target: conditional("patch")?,
            patch: patch_body(body)?,
        }),
        ("DELETE", [t]) => Ok(Interaction::Delete { resource_type: resource_type(t)?, target: conditional("delete")? }),
        ("POST", [t, "_search"]) => {
            Ok(Interaction::Search { resource_type: resource_type(t)?, params: params(), compartment: None })
        }
        ("GET" | "HEAD", [t, "_history"]) => Ok(Interaction::History {
            level: HistoryLevel::Type { resource_type: resource_type(t)? },
            params: params(),
        }),
        ("GET" | "HEAD", [t, id]) => Ok(Interaction::Read { resource_type: resource_type(t)?, id: logical_id(id)? }),
        ("PUT", [t, id]) => Ok(Interaction::Update {
            resource_type: resource_type(t)?,
            target: Target::Id(logical_id(id)?),
            body: resource_body(body)?,
        }),
        ("PATCH", [t, id]) => Ok(Interaction::Patch {
            resource_type: resource_type(t)?,
            target: Target::Id(logical_id(id)?),
            patch: patch_body(body)?,
        }),
        ("DELETE", [t, id]) => {
            Ok(Interaction::Delete { resource_type: resource_type(t)?, target: Target::Id(logical_id(id)?) })
        }
        ("GET" | "HEAD", [t, id, "_history"]) => Ok(Interaction::History {
            level: HistoryLevel::Instance { resource_type: resource_type(t)?, id: logical_id(id)? },
            params: params(),
        }),
        ("GET" | "HEAD", ["Patient", id, "$everything"]) => {
            Ok(Interaction::Everything { id: logical_id(id)?, params: params() })
        }
        ("GET" | "HEAD", ["Patient", id, t]) if *t != "_history" => Ok(Interaction::Search {
            resource_type: resource_type(t)?,
            params: params(),
            compartment: Some(logical_id(id)?),
        }),
        ("GET" | "HEAD", [t, id, "_history", v]) => {
            Ok(Interaction::VRead { resource_type: resource_type(t)?, id: logical_id(id)?, version: version(v)? })
        }
        (m, [t, ..]) if segments.len() <= 4 => {
            resource_type(t)?;
            Err(not_allowed(m, path))
        }
        _ => Err(ApiError::NotFound(format!("no FHIR endpoint at '{path}'"))),
    }
}

fn patch_body(body: Option<Body>) -> Result<Value, ApiError> {
    match body {
        Some(Body::JsonPatch(v)) => Ok(v),
        Some(Body::Resource(_)) => Err(ApiError::UnsupportedMediaType(
            "PATCH takes a JSON Patch document (Content-Type: application/json-patch+json)".into(),
        )),
        None => Err(ApiError::invalid(IssueType::Required, "PATCH needs a JSON Patch document in the body", None)),
    }
}

/// Parses `W/"3"` (or `"3"`, or `3`) as a version.
pub fn parse_etag(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
    parse_version_id(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("7"), Some(7));
        assert_eq!(parse_etag("W/\"x\""), None);
    }
}
