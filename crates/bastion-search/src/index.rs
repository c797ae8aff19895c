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
    composites: Vec<CompositePlan>,
}

/// A two-part composite: the nodes `base` selects, and on each node its first (token) and
/// second component.
struct CompositePlan {
    code: String,
    base: Expr,
    first: Expr,
    second: Expr,
    second_kind: SearchParamType,
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
        composites: definitions::search_params(resource_type)
            .into_iter()
            .filter(|p| crate::query::is_supported_composite(p))
            .filter_map(|p| {
                Some(CompositePlan {
                    code: p.code.clone(),
                    base: parse_expression(p.expression.as_deref()?)?,
                    first: parse_expression(&p.components[0].expression)?,
                    second: parse_expression(&p.components[1].expression)?,
                    second_kind: p.components[1].kind,
                })
            })
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

/// The text of a coded value (`CodeableConcept.text`, `Coding.display`,
/// `Identifier.type.text`), what `:text` matches.
fn token_texts<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    let Value::Object(o) = v else { return };
    if let Some(t) = o.get("text").and_then(Value::as_str) {
        out.push(t);
    }
    if let Some(d) = o.get("display").and_then(Value::as_str) {
        out.push(d);
    }
    if let Some(Value::Array(codings)) = o.get("coding") {
        for c in codings {
            if let Some(d) = c.get("display").and_then(Value::as_str) {
                out.push(d);
            }
        }
    }
    if o.contains_key("value")
        && let Some(t) = o.get("type")
    {
        // Identifier.type
        token_texts(t, out);
    }
}

/// `:of-type` rows of an Identifier: one per coding of its type.
fn of_type_rows(param: &str, v: &Value, out: &mut Vec<TokenRow>) {
    let (Some(value), Some(Value::Array(codings))) =
        (v.get("value").and_then(Value::as_str), v.get("type").and_then(|t| t.get("coding")))
    else {
        return;
    };
    for c in codings {
        if let (Some(system), Some(code)) =
            (c.get("system").and_then(Value::as_str), c.get("code").and_then(Value::as_str))
        {
            out.push(TokenRow {
                param: crate::query::of_type_key(param),
                system: Some(format!("{system}|{code}")),
                code: value.to_string(),
            });
        }
    }
}

/// The most words `_text` and `_content` index per resource; a longer text is searchable
/// by its first distinct words only (a bound on what one write may cost).
pub const MAX_WORDS_PER_RESOURCE: usize = 1000;

/// Narrative XHTML -> its text: tags dropped, the common entities decoded.
fn narrative_text(div: &str) -> String {
    let mut out = String::with_capacity(div.len());
    let mut in_tag = false;
    for c in div.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&nbsp;", " ")
}

/// Every human-readable string of a resource, for `_content`: not ids, references,
/// systems, urls, dates or attachment data.
fn content_strings<'a>(key: &str, v: &'a Value, out: &mut Vec<std::borrow::Cow<'a, str>>) {
    match v {
        Value::String(s) => {
            if key == "div" {
                out.push(std::borrow::Cow::Owned(narrative_text(s)));
            } else if !matches!(
                key,
                "id" | "reference" | "system" | "url" | "data" | "version" | "lastUpdated" | "fullUrl" | "resourceType"
            ) && bastion_fhir::primitives::DateRange::parse(s).is_none()
            {
                out.push(std::borrow::Cow::Borrowed(s));
            }
        }
        Value::Array(items) => items.iter().for_each(|i| content_strings(key, i, out)),
        Value::Object(o) => o.iter().for_each(|(k, c)| content_strings(k, c, out)),
        _ => {}
    }
}

fn word_rows(param: &str, texts: impl IntoIterator<Item = impl AsRef<str>>, out: &mut Vec<StringRow>) {
    let mut seen = std::collections::HashSet::new();
    for t in texts {
        for w in crate::query::words(t.as_ref()) {
            if seen.len() >= MAX_WORDS_PER_RESOURCE {
                return;
            }
            if seen.insert(w.clone()) {
                out.push(StringRow { param: param.to_string(), normalized: w.clone(), exact: w });
            }
        }
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
    let plan = plan_for(rtype);
    for (code, kind, path) in &plan.paths {
        for v in nodes(path, resource) {
            match kind {
                SearchParamType::Token => {
                    value_rows(code, SearchParamType::Token, v, &mut rows);
                    of_type_rows(code, v, &mut rows.tokens);
                    let mut texts = Vec::new();
                    token_texts(v, &mut texts);
                    for t in texts {
                        rows.strings.push(StringRow {
                            param: crate::query::token_text_key(code),
                            normalized: normalize_string(t),
                            exact: t.to_string(),
                        });
                    }
                }
                kind => value_rows(code, *kind, v, &mut rows),
            }
        }
    }
    for c in &plan.composites {
        composite_rows(c, resource, &mut rows);
    }
    rows.tokens.extend(label_class_rows(&rows.tokens));
    if let Some(div) = resource.get("text").and_then(|t| t.get("div")).and_then(Value::as_str) {
        word_rows(crate::query::TEXT_PARAM, [narrative_text(div)], &mut rows.strings);
    }
    let mut content = Vec::new();
    content_strings("", resource, &mut content);
    word_rows(crate::query::CONTENT_PARAM, content, &mut rows.strings);
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

/// The date rows one parameter yields for a resource, exactly as [`extract_index`] writes
/// them (the in-memory half of a Consent's `dataPeriod`).
pub fn date_rows(resource: &Value, param: &str) -> Vec<DateRow> {
    let rtype = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
    let plan = plan_for(rtype);
    let mut out = Vec::new();
    for (code, _, path) in plan.paths.iter().filter(|(code, kind, _)| code == param && *kind == SearchParamType::Date) {
        for v in nodes(path, resource) {
            date_rows_of(code, v, &mut out);
        }
    }
    out
}

/// The class row of each `_security` row (see [`bastion_fhir::labels::LABEL_CLASS_PARAM`]).
fn label_class_rows(tokens: &[TokenRow]) -> Vec<TokenRow> {
    tokens
        .iter()
        .filter(|t| t.param == "_security")
        .map(|t| TokenRow {
            param: bastion_fhir::labels::LABEL_CLASS_PARAM.to_string(),
            system: None,
            code: bastion_fhir::labels::class_key(t.system.as_deref(), &t.code),
        })
        .collect()
}

/// The token rows one parameter yields for a resource, exactly as [`extract_index`] writes
/// them: the in-memory half of an access predicate on a token (a granular scope's
/// `category=...`, a stamped organization tag) evaluates against these.
pub fn token_rows(resource: &Value, param: &str) -> Vec<TokenRow> {
    if param == bastion_fhir::labels::LABEL_CLASS_PARAM {
        let mut out = label_class_rows(&token_rows(resource, "_security"));
        out.sort();
        out.dedup();
        return out;
    }
    let rtype = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
    let plan = plan_for(rtype);
    let mut out = Vec::new();
    for (code, _, path) in plan.paths.iter().filter(|(code, kind, _)| code == param && *kind == SearchParamType::Token)
    {
        for v in nodes(path, resource) {
            token_rows_of(code, v, &mut out);
        }
    }
    out
}

/// Rows of a date, reference, number, quantity or uri value (tokens and strings have
/// extra rows of their own, written by the caller).
fn value_rows(code: &str, kind: SearchParamType, v: &Value, rows: &mut IndexRows) {
    match kind {
        SearchParamType::Token => token_rows_of(code, v, &mut rows.tokens),
        SearchParamType::String => {
            let mut leaves = Vec::new();
            string_leaves(v, &mut leaves);
            for s in leaves {
                rows.strings.push(StringRow {
                    param: code.to_string(),
                    normalized: normalize_string(s),
                    exact: s.to_string(),
                });
            }
        }
        SearchParamType::Date => date_rows_of(code, v, &mut rows.dates),
        SearchParamType::Reference => reference_rows_of(code, v, &mut rows.references),
        SearchParamType::Number => {
            if let Some(value) = number_of(v) {
                rows.numbers.push(NumberRow { param: code.to_string(), value });
            }
        }
        SearchParamType::Quantity => {
            if let Some(value) = v.get("value").and_then(number_of) {
                let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
                rows.quantities.push(QuantityRow {
                    param: code.to_string(),
                    value,
                    system: text("system"),
                    code: text("code"),
                    unit: text("unit"),
                });
            }
        }
        SearchParamType::Uri => {
            if let Some(u) = v.as_str() {
                rows.uris.push(UriRow { param: code.to_string(), value: u.to_string() });
            }
        }
        _ => {}
    }
}

/// A composite's rows: on each node, the second component's rows under every key of the
/// first component's codings ([`crate::query::composite_key`]), so that both parts match
/// on the same node (the same `Observation.component`).
fn composite_rows(c: &CompositePlan, resource: &Value, rows: &mut IndexRows) {
    for node in nodes(&c.base, resource) {
        let mut firsts = Vec::new();
        for v in nodes(&c.first, node) {
            token_rows_of(&c.code, v, &mut firsts);
        }
        if firsts.is_empty() {
            continue;
        }
        let mut seconds = IndexRows::default();
        for v in nodes(&c.second, node) {
            value_rows(&c.code, c.second_kind, v, &mut seconds);
        }
        for t in &firsts {
            let keys = [
                crate::query::composite_key(&c.code, &t.code, Some(t.system.as_deref().unwrap_or(""))),
                crate::query::composite_key(&c.code, &t.code, None),
            ];
            for key in keys {
                let k = || key.clone();
                rows.tokens.extend(seconds.tokens.iter().map(|r| TokenRow { param: k(), ..r.clone() }));
                rows.strings.extend(seconds.strings.iter().map(|r| StringRow { param: k(), ..r.clone() }));
                rows.dates.extend(seconds.dates.iter().map(|r| DateRow { param: k(), ..r.clone() }));
                rows.references.extend(seconds.references.iter().map(|r| ReferenceRow { param: k(), ..r.clone() }));
                rows.numbers.extend(seconds.numbers.iter().map(|r| NumberRow { param: k(), ..r.clone() }));
                rows.quantities.extend(seconds.quantities.iter().map(|r| QuantityRow { param: k(), ..r.clone() }));
                rows.uris.extend(seconds.uris.iter().map(|r| UriRow { param: k(), ..r.clone() }));
            }
        }
    }
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
        assert!(!rows.strings.iter().any(|s| s.param == "name" && s.exact == "official"), "codes are not strings");
        let b = rows.dates.iter().find(|d| d.param == "birthdate").unwrap();
        assert_eq!(bastion_fhir::primitives::Instant::from_millis(b.low).to_fhir(), "1980-05-01T00:00:00.000Z");
        let r = rows.references.iter().find(|r| r.param == "general-practitioner").unwrap();
        assert_eq!((r.target_type.as_deref(), r.target_id.as_deref()), (Some("Practitioner"), Some("dr1")));
        let e = json!({"resourceType":"Encounter","id":"e","status":"finished","class":{"code":"AMB"},"period":{"start":"2020-01-01"}});
        let d = extract_index(&e).dates.into_iter().find(|d| d.param == "date").unwrap();
        assert_eq!(d.high, i64::MAX, "an open Period ends never");
    }

    #[test]
    fn composite_rows_pair_the_parts_of_one_component() {
        let bp = json!({"resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 150}},
                {"code": {"coding": [{"code": "8462-4"}]}, "valueQuantity": {"value": 70}}]});
        let rows = extract_index(&bp);
        let q = |param: &str| -> Vec<f64> {
            rows.quantities.iter().filter(|r| r.param == param).map(|r| r.value).collect()
        };
        assert_eq!(q("component-code-value-quantity$8480-6|http://loinc.org"), vec![150.0]);
        assert_eq!(q("component-code-value-quantity$8480-6"), vec![150.0]);
        assert_eq!(q("component-code-value-quantity$8462-4|"), vec![70.0], "no system: the empty-system key");
        assert_eq!(q("combo-code-value-quantity$8462-4"), vec![70.0]);
        assert!(q("code-value-quantity$85354-9").is_empty(), "the panel itself has no value");
    }

    #[test]
    fn token_text_and_identifier_type_rows() {
        let p = json!({"resourceType": "Patient", "id": "p", "identifier": [{"type": {"text": "Medical record",
            "coding": [{"system": "urn:v2", "code": "MR", "display": "MRN"}]}, "system": "urn:mrn", "value": "42"}]});
        let rows = extract_index(&p);
        let texts: Vec<&str> =
            rows.strings.iter().filter(|s| s.param == "identifier:text").map(|s| s.normalized.as_str()).collect();
        assert_eq!(texts, vec!["medical record", "mrn"]);
        assert!(rows.tokens.contains(&TokenRow {
            param: "identifier:of-type".into(),
            system: Some("urn:v2|MR".into()),
            code: "42".into()
        }));
    }

    #[test]
    fn full_text_words_come_from_narrative_text_and_readable_strings() {
        let c = json!({"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"},
            "recordedDate": "2020-01-02", "code": {"text": "Crème brûlée allergy"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><b>Bold</b>&amp;Risky</div>"}});
        let rows = extract_index(&c);
        let words = |param: &str| -> Vec<&str> {
            let mut w: Vec<&str> =
                rows.strings.iter().filter(|s| s.param == param).map(|s| s.normalized.as_str()).collect();
            w.sort();
            w
        };
        assert_eq!(words("_text"), vec!["bold", "risky"]);
        let content = words("_content");
        for w in ["creme", "brulee", "allergy", "bold", "risky"] {
            assert!(content.contains(&w), "{w} in {content:?}");
        }
        for w in ["div", "xmlns", "http", "patient", "2020", "condition"] {
            assert!(!content.contains(&w), "{w} must not be content: {content:?}");
        }
    }

    #[test]
    fn full_text_is_capped_per_resource() {
        let div: String = (0..3000).map(|i| format!("w{i} ")).collect();
        let c = json!({"resourceType": "Basic", "id": "b", "code": {"text": "x"},
            "text": {"status": "generated", "div": format!("<div>{div}</div>")}});
        let rows = extract_index(&c);
        assert_eq!(rows.strings.iter().filter(|s| s.param == "_text").count(), MAX_WORDS_PER_RESOURCE);
    }

    #[test]
    fn organization_is_in_no_patient_compartment() {
        let o = json!({"resourceType":"Organization","id":"o","name":"x"});
        assert!(extract_index(&o).compartments.is_empty());
    }
}
