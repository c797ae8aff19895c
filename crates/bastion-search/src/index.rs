//! Resource -> index rows, computed once at write time and stored beside the resource.
//!
//! Two things come out of a resource here: its memberships in patient compartments (from
//! the R4 Patient CompartmentDefinition and nothing else, so that a reference such as
//! `Observation.focus` never makes data visible to a patient), and the token, string, date
//! and reference rows that searches match against.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use bastion_fhir::definitions::{self, SearchParamType};
use serde_json::Value;

use crate::fhirpath::{Expr, Item};

/// One row of the token index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenRow {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
}

/// One row of the string index: the value as written, and normalised for the default
/// (case- and accent-insensitive, starts-with) match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StringRow {
    pub param: String,
    pub normalized: String,
    pub exact: String,
}

/// One row of the date index: the span the value denotes, inclusive milliseconds; an open
/// end of a Period is `i64::MIN` / `i64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DateRow {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

/// One row of the reference index: `Type/id` split for relative references, the whole
/// string otherwise (absolute URLs, canonicals, `#contained`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReferenceRow {
    pub param: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub url: String,
}

/// A number (`number` parameters) as a float for range matching.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct NumberRow {
    pub param: String,
    pub value: f64,
}

/// A quantity: its value with the system and code (or the unit as written).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct QuantityRow {
    pub param: String,
    pub value: f64,
    pub system: Option<String>,
    pub code: Option<String>,
    pub unit: Option<String>,
}

/// A uri, url or canonical as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UriRow {
    pub param: String,
    pub value: String,
}

/// The parameter types that have an index (and so can be searched).
pub fn is_indexed_kind(kind: SearchParamType) -> bool {
    matches!(
        kind,
        SearchParamType::Token
            | SearchParamType::String
            | SearchParamType::Date
            | SearchParamType::Reference
            | SearchParamType::Number
            | SearchParamType::Quantity
            | SearchParamType::Uri
    )
}

/// Everything the store writes beside a resource version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexRows {
    /// Ids of every patient whose compartment holds this resource (sorted, unique).
    pub compartments: Vec<String>,
    pub tokens: Vec<TokenRow>,
    pub strings: Vec<StringRow>,
    pub dates: Vec<DateRow>,
    pub references: Vec<ReferenceRow>,
    pub numbers: Vec<NumberRow>,
    pub quantities: Vec<QuantityRow>,
    pub uris: Vec<UriRow>,
}

impl IndexRows {
    /// The single compartment key an index row carries (for sharding by patient):
    /// the first patient compartment, if any.
    pub fn compartment_key(&self) -> Option<&str> {
        self.compartments.first().map(String::as_str)
    }
}

/// The id of a relative `Patient/<id>` reference (`_history` suffix ignored).
fn patient_id_of_reference(reference: &str) -> Option<&str> {
    let rest = reference.strip_prefix("Patient/")?;
    let id = rest.split('/').next()?;
    bastion_fhir::primitives::is_valid_id(id).then_some(id)
}

/// Parses a definition's expression; one the evaluator does not support is not indexed
/// (and so not offered in the CapabilityStatement), never guessed at.
pub fn parse_expression(expr: &str) -> Option<Expr> {
    Expr::parse(expr).ok()
}

/// The elements an expression selects (not the booleans or strings it may compute).
fn nodes<'a>(e: &Expr, resource: &'a Value) -> Vec<&'a Value> {
    e.evaluate(resource)
        .into_iter()
        .filter_map(|i| match i {
            Item::Node(v, _) => Some(v),
            _ => None,
        })
        .collect()
}

/// What to evaluate on a resource of one type, parsed once from the definitions.
struct IndexPlan {
    /// The resource is in its own compartment (Patient).
    own_compartment: bool,
    compartment_paths: Vec<Expr>,
    /// (code, type, path) of every token, string, date and reference parameter.
    paths: Vec<(String, SearchParamType, Expr)>,
}

fn plan_for(resource_type: &str) -> Arc<IndexPlan> {
    static PLANS: OnceLock<RwLock<HashMap<String, Arc<IndexPlan>>>> = OnceLock::new();
    let plans = PLANS.get_or_init(Default::default);
    if let Some(p) = plans.read().expect("index plans poisoned").get(resource_type) {
        return p.clone();
    }
    let params = definitions::patient_compartment_params(resource_type);
    let plan = Arc::new(IndexPlan {
        own_compartment: params.iter().any(|c| c == "{def}"),
        compartment_paths: params
            .iter()
            .filter_map(|code| definitions::search_param(resource_type, code))
            .filter_map(|p| p.expression.as_deref().and_then(parse_expression))
            .collect(),
        paths: definitions::search_params(resource_type)
            .into_iter()
            .filter(|p| is_indexed_kind(p.kind) && p.code != "_id" && p.code != "_lastUpdated")
            .filter_map(|p| Some((p.code.clone(), p.kind, p.expression.as_deref().and_then(parse_expression)?)))
            .collect(),
    });
    plans.write().expect("index plans poisoned").insert(resource_type.to_string(), plan.clone());
    plan
}

/// Patient compartment memberships according to the CompartmentDefinition.
pub fn patient_compartments(resource: &Value) -> Vec<String> {
    let Some(rtype) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let plan = plan_for(rtype);
    let mut out = Vec::new();
    if plan.own_compartment
        && let Some(id) = resource.get("id").and_then(Value::as_str)
    {
        out.push(id.to_string());
    }
    for path in &plan.compartment_paths {
        for v in nodes(path, resource) {
            if let Some(id) = v.get("reference").and_then(Value::as_str).and_then(patient_id_of_reference) {
                out.push(id.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn token_rows_of(param: &str, v: &Value, out: &mut Vec<TokenRow>) {
    let row = |system: Option<&str>, code: &str| TokenRow {
        param: param.to_string(),
        system: system.map(str::to_string),
        code: code.to_string(),
    };
    match v {
        Value::String(s) => out.push(row(None, s)),
        Value::Bool(b) => out.push(row(None, if *b { "true" } else { "false" })),
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                for c in codings {
                    token_rows_of(param, c, out);
                }
            } else if let Some(code) = o.get("code").and_then(Value::as_str) {
                out.push(row(o.get("system").and_then(Value::as_str), code));
            } else if let Some(value) = o.get("value").and_then(Value::as_str) {
                // Identifier and ContactPoint
                out.push(row(o.get("system").and_then(Value::as_str), value));
            }
        }
        _ => {}
    }
}

/// Lower case, accents removed (NFD without combining marks): the form the default string
/// search compares.
pub fn normalize_string(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

/// Every string inside a value: a plain string, or the parts of a HumanName, Address and
/// other complex types (not their codes, systems, periods or extensions).
fn string_leaves<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| string_leaves(i, out)),
        Value::Object(o) => {
            for (k, child) in o {
                if !matches!(k.as_str(), "extension" | "id" | "use" | "system" | "period" | "url" | "type" | "code") {
                    string_leaves(child, out);
                }
            }
        }
        _ => {}
    }
}

fn date_rows_of(param: &str, v: &Value, out: &mut Vec<DateRow>) {
    let row = |low, high| DateRow { param: param.to_string(), low, high };
    match v {
        Value::String(s) => {
            if let Some(r) = bastion_fhir::primitives::DateRange::parse(s) {
                out.push(row(r.low, r.high));
            }
        }
        Value::Object(o) => {
            // Period
            let start = o.get("start").and_then(Value::as_str).and_then(bastion_fhir::primitives::DateRange::parse);
            let end = o.get("end").and_then(Value::as_str).and_then(bastion_fhir::primitives::DateRange::parse);
            if start.is_some() || end.is_some() {
                out.push(row(start.map_or(i64::MIN, |r| r.low), end.map_or(i64::MAX, |r| r.high)));
            }
        }
        _ => {}
    }
}

fn reference_rows_of(param: &str, v: &Value, out: &mut Vec<ReferenceRow>) {
    let reference = match v {
        Value::Object(o) => o.get("reference").and_then(Value::as_str),
        // canonical / uri targets
        Value::String(s) => Some(s.as_str()),
        _ => None,
    };
    let Some(r) = reference else { return };
    let mut parts = r.split('/');
    let (t, id) = (parts.next(), parts.next());
    let relative = match (t, id) {
        (Some(t), Some(id)) if definitions::is_resource_type(t) && bastion_fhir::primitives::is_valid_id(id) => {
            Some((t.to_string(), id.to_string()))
        }
        _ => None,
    };
    out.push(ReferenceRow {
        param: param.to_string(),
        target_type: relative.as_ref().map(|(t, _)| t.clone()),
        target_id: relative.map(|(_, i)| i),
        url: r.to_string(),
    });
}

/// Every index row for a resource (which must carry its final `id`).
pub fn extract_index(resource: &Value) -> IndexRows {
    let rtype = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
    let mut rows = IndexRows::default();
    for (code, kind, path) in &plan_for(rtype).paths {
        for v in nodes(path, resource) {
            match kind {
                SearchParamType::Token => token_rows_of(code, v, &mut rows.tokens),
                SearchParamType::String => {
                    let mut leaves = Vec::new();
                    string_leaves(v, &mut leaves);
                    for s in leaves {
                        rows.strings.push(StringRow {
                            param: code.clone(),
                            normalized: normalize_string(s),
                            exact: s.to_string(),
                        });
                    }
                }
                SearchParamType::Date => date_rows_of(code, v, &mut rows.dates),
                SearchParamType::Reference => reference_rows_of(code, v, &mut rows.references),
                SearchParamType::Number => {
                    if let Some(value) = number_of(v) {
                        rows.numbers.push(NumberRow { param: code.clone(), value });
                    }
                }
                SearchParamType::Quantity => {
                    if let Some(value) = v.get("value").and_then(number_of) {
                        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
                        rows.quantities.push(QuantityRow {
                            param: code.clone(),
                            value,
                            system: text("system"),
                            code: text("code"),
                            unit: text("unit"),
                        });
                    }
                }
                SearchParamType::Uri => {
                    if let Some(u) = v.as_str() {
                        rows.uris.push(UriRow { param: code.clone(), value: u.to_string() });
                    }
                }
                _ => {}
            }
        }
    }
    rows.tokens.sort();
    rows.tokens.dedup();
    rows.strings.sort();
    rows.strings.dedup();
    rows.dates.sort();
    rows.dates.dedup();
    rows.references.sort();
    rows.references.dedup();
    rows.uris.sort();
    rows.uris.dedup();
    rows.compartments = patient_compartments(resource);
    rows
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        // arbitrary_precision keeps the text; the index compares as a float.
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn observation_compartments_come_from_subject_and_performer_not_focus() {
        let obs = json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Patient/p2"}],
            "focus": [{"reference": "Patient/p3"}]
        });
        let rows = extract_index(&obs);
        assert_eq!(rows.compartments, vec!["p1".to_string(), "p2".to_string()]);
        assert!(rows.tokens.contains(&TokenRow {
            param: "code".into(),
            system: Some("http://loinc.org".into()),
            code: "1234-5".into()
        }));
        assert!(rows.tokens.iter().any(|t| t.param == "status" && t.code == "final"));
    }

    #[test]
    fn patient_is_in_its_own_compartment_and_indexes_identifiers() {
        let p = json!({"resourceType":"Patient","id":"p9",
            "identifier":[{"system":"urn:mrn","value":"123"}], "gender":"female"});
        let rows = extract_index(&p);
        assert_eq!(rows.compartments, vec!["p9".to_string()]);
        assert!(
            rows.tokens
                .iter()
                .any(|t| t.param == "identifier" && t.system.as_deref() == Some("urn:mrn") && t.code == "123")
        );
        assert!(rows.tokens.iter().any(|t| t.param == "gender" && t.code == "female"));
    }

    #[test]
    fn strings_dates_and_references() {
        let p = json!({"resourceType":"Patient","id":"p1","name":[{"family":"Müller","given":["Zoë"],"use":"official"}],
            "birthDate":"1980-05", "generalPractitioner":[{"reference":"Practitioner/dr1"}]});
        let rows = extract_index(&p);
        assert!(rows.strings.iter().any(|s| s.param == "family" && s.normalized == "muller" && s.exact == "Müller"));
        assert!(rows.strings.iter().any(|s| s.param == "name" && s.normalized == "zoe"));
        assert!(!rows.strings.iter().any(|s| s.exact == "official"), "codes are not strings");
        let b = rows.dates.iter().find(|d| d.param == "birthdate").unwrap();
        assert_eq!(bastion_fhir::primitives::Instant::from_millis(b.low).to_fhir(), "1980-05-01T00:00:00.000Z");
        let r = rows.references.iter().find(|r| r.param == "general-practitioner").unwrap();
        assert_eq!((r.target_type.as_deref(), r.target_id.as_deref()), (Some("Practitioner"), Some("dr1")));
        let e = json!({"resourceType":"Encounter","id":"e","status":"finished","class":{"code":"AMB"},"period":{"start":"2020-01-01"}});
        let d = extract_index(&e).dates.into_iter().find(|d| d.param == "date").unwrap();
        assert_eq!(d.high, i64::MAX, "an open Period ends never");
    }

    #[test]
    fn organization_is_in_no_patient_compartment() {
        let o = json!({"resourceType":"Organization","id":"o","name":"x"});
        assert!(extract_index(&o).compartments.is_empty());
    }
}
