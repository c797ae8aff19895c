//! `_summary` and `_elements`: what of each resource a search returns. Stored bytes are
//! served untouched unless one of them asks for less; a reduced resource is marked with the
//! `SUBSETTED` tag, as the spec requires.

use bastion_fhir::IssueType;
use bastion_fhir::definitions;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Full,
    /// `_summary=count`: the total only.
    CountOnly,
    /// `_summary=text`: id, meta, text and the mandatory top-level elements.
    Text,
    /// `_summary=data`: everything but the narrative.
    Data,
    /// `_summary=true`: the elements the base definition marks as summary.
    Summary,
    /// `_elements=a,b`: these top-level elements (with id and meta).
    Elements(Vec<String>),
}

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

impl Shape {
    pub fn from_params(summary: Option<&str>, elements: Option<&str>) -> Result<Shape, ApiError> {
        let bad = |m: &str| ApiError::invalid(IssueType::Invalid, m, None);
        match (summary, elements) {
            (Some(_), Some(_)) => Err(bad("_summary and _elements cannot be combined")),
            (None | Some("false"), None) => Ok(Shape::Full),
            (Some("count"), None) => Ok(Shape::CountOnly),
            (Some("text"), None) => Ok(Shape::Text),
            (Some("data"), None) => Ok(Shape::Data),
            (Some("true"), None) => Ok(Shape::Summary),
            (Some(other), None) => {
                Err(bad(&format!("_summary must be true, text, data, count or false, not '{other}'")))
            }
            (None, Some(list)) => {
                let names: Vec<String> =
                    list.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
                if names.is_empty() || names.iter().any(|n| !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
                    return Err(bad("_elements takes a comma-separated list of element names"));
                }
                Ok(Shape::Elements(names))
            }
        }
    }

    pub fn count_only(&self) -> bool {
        *self == Shape::CountOnly
    }

    /// The bytes to serve for a stored resource.
    pub fn apply(&self, body: Option<&[u8]>) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(bytes) = body else { return Ok(None) };
        let keep: Box<dyn Fn(&str) -> bool> = match self {
            Shape::Full | Shape::CountOnly => return Ok(Some(bytes.to_vec())),
            Shape::Data => Box::new(|k| k != "text"),
            Shape::Text => Box::new(|k| matches!(k, "text" | "status")),
            Shape::Summary => Box::new(|_| true),
            Shape::Elements(names) => {
                let names = names.clone();
                Box::new(move |k| names.iter().any(|n| n == k))
            }
        };
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))?;
        let Value::Object(fields) = v else { return Ok(Some(bytes.to_vec())) };
        let fields = match self {
            Shape::Summary => {
                let rtype = fields.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
                summary_of(&rtype, &rtype, fields)
            }
            _ => fields,
        };
        let mut out = Map::new();
        for (k, val) in fields {
            if matches!(k.as_str(), "resourceType" | "id" | "meta") || keep(&k) {
                out.insert(k, val);
            }
        }
        let meta = out.entry("meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(t) = tags.as_array_mut() {
                t.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
            }
        }
        Ok(Some(serde_json::to_vec(&Value::Object(out)).unwrap_or_default()))
    }
}

/// The summary elements of an object at `path` of `resource_type` (the resource itself,
/// or one of its backbone elements, which are reduced the same way). An element the
/// definitions do not know is dropped: a summary never carries more than the spec lists.
fn summary_of(resource_type: &str, path: &str, fields: Map<String, Value>) -> Map<String, Value> {
    let Some(table) = definitions::type_definition(resource_type).and_then(|t| t.table(path)) else {
        return Map::new();
    };
    let mut out = Map::new();
    for (k, v) in fields {
        if k == "resourceType" {
            out.insert(k, v);
            continue;
        }
        let name = k.strip_prefix('_').unwrap_or(&k);
        let Some(child) = table.child(name) else { continue };
        if !child.element.is_summary {
            continue;
        }
        let v = match (&child.element.backbone, v) {
            (Some(sub), Value::Object(o)) => Value::Object(summary_of(resource_type, sub, o)),
            (Some(sub), Value::Array(items)) => Value::Array(
                items
                    .into_iter()
                    .map(|i| match i {
                        Value::Object(o) => Value::Object(summary_of(resource_type, sub, o)),
                        other => other,
                    })
                    .collect(),
            ),
            (_, v) => v,
        };
        out.insert(k, v);
    }
    out
}
