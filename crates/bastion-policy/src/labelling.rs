//! The labelling service: rules that label a resource from its content on every write, so
//! that clinicians need not label by hand (an Observation or Condition whose code is a
//! depression code gets `PSY` and confidentiality `R`).
//!
//! A rule names resource types, codes matched against the type's `code` search parameter
//! (the same match as `code=system|code`), and the labels it adds; its confidentiality
//! raises the resource's, never lowers it. Rules only add: what the resource already carries
//! stays. What it is not: who may change labels afterwards (the server keeps held labels
//! against plain writes) or who may see them (labels.rs).

use bastion_fhir::labels::{self, CONFIDENTIALITY_SYSTEM, Confidentiality, LabelKind};
use bastion_search::access::token_matches;
use bastion_search::query::{SystemMatch, TokenValue};
use serde_json::{Value, json};

/// One `[[labelling]]` table, as configured.
#[derive(Debug, Clone, Default)]
pub struct LabellingSpec {
    pub name: String,
    pub types: Vec<String>,
    /// `system|code` values of the `code` parameter.
    pub codes: Vec<String>,
    /// `system|code` labels to add (known security labels only).
    pub labels: Vec<String>,
    pub confidentiality: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabellingError {
    #[error("labelling rule {rule}: names no resource type")]
    NoTypes { rule: String },
    #[error("labelling rule {rule}: {value} is not an R4 resource type with a code parameter")]
    BadType { rule: String, value: String },
    #[error("labelling rule {rule}: names no code to match")]
    NoCodes { rule: String },
    #[error("labelling rule {rule}: {field} value {value:?} is not system|code")]
    BadCoding { rule: String, field: &'static str, value: String },
    #[error("labelling rule {rule}: {value} is not a security label this server knows")]
    UnknownLabel { rule: String, value: String },
    #[error("labelling rule {rule}: confidentiality must be one of U, L, M, N, R, V")]
    BadConfidentiality { rule: String },
    #[error("labelling rule {rule}: adds no label")]
    NoLabels { rule: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabellingRule {
    pub name: String,
    types: Vec<String>,
    codes: Vec<TokenValue>,
    /// `(system, code)`, each a known non-confidentiality label.
    labels: Vec<(String, String)>,
    confidentiality: Option<Confidentiality>,
}

fn split(rule: &str, field: &'static str, v: &str) -> Result<(String, String), LabellingError> {
    match v.split_once('|') {
        Some((s, c)) if !s.is_empty() && !c.is_empty() && !c.contains('|') => Ok((s.into(), c.into())),
        _ => Err(LabellingError::BadCoding { rule: rule.into(), field, value: v.into() }),
    }
}

impl LabellingRule {
    /// Checks a configured rule; every mistake is an error at start.
    pub fn from_spec(spec: LabellingSpec) -> Result<LabellingRule, LabellingError> {
        let rule = spec.name.clone();
        if spec.types.is_empty() {
            return Err(LabellingError::NoTypes { rule });
        }
        for t in &spec.types {
            let has_code = bastion_fhir::definitions::search_param(t, "code").is_some();
            if !bastion_fhir::definitions::is_resource_type(t) || !has_code {
                return Err(LabellingError::BadType { rule, value: t.clone() });
            }
        }
        if spec.codes.is_empty() {
            return Err(LabellingError::NoCodes { rule });
        }
        let codes = spec
            .codes
            .iter()
            .map(|v| split(&rule, "codes", v).map(|(s, c)| TokenValue { system: SystemMatch::Is(s), code: Some(c) }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut added = Vec::new();
        for l in &spec.labels {
            let (s, c) = split(&rule, "labels", l)?;
            match labels::classify(Some(&s), &c) {
                LabelKind::Unknown | LabelKind::Confidentiality(_) => {
                    return Err(LabellingError::UnknownLabel { rule, value: l.clone() });
                }
                _ => added.push((s, c)),
            }
        }
        let confidentiality = match spec.confidentiality.as_deref() {
            None => None,
            Some(code) => {
                Some(Confidentiality::parse(code).ok_or(LabellingError::BadConfidentiality { rule: rule.clone() })?)
            }
        };
        if added.is_empty() && confidentiality.is_none() {
            return Err(LabellingError::NoLabels { rule });
        }
        Ok(LabellingRule { name: spec.name, types: spec.types, codes, labels: added, confidentiality })
    }

    fn matches(&self, resource_type: &str, resource: &Value) -> bool {
        self.types.iter().any(|t| t == resource_type)
            && bastion_search::index::token_rows(resource, "code")
                .iter()
                .any(|row| self.codes.iter().any(|v| token_matches(v, row.system.as_deref(), &row.code)))
    }
}

/// Adds to `resource` the labels of every rule its content matches. Returns the names of the
/// rules that changed it.
pub fn apply(rules: &[LabellingRule], resource_type: &str, resource: &mut Value) -> Vec<String> {
    let mut changed = Vec::new();
    // Which rules match is decided on the content as written, before any rule adds to it.
    let matching: Vec<&LabellingRule> = rules.iter().filter(|r| r.matches(resource_type, resource)).collect();
    for rule in matching {
        let mut security: Vec<Value> =
            resource.pointer("/meta/security").and_then(Value::as_array).cloned().unwrap_or_default();
        let before = security.len();
        let mut touched = false;
        for (system, code) in &rule.labels {
            let present = security.iter().any(|l| {
                l.get("system").and_then(Value::as_str) == Some(system)
                    && l.get("code").and_then(Value::as_str) == Some(code)
            });
            if !present {
                security.push(json!({"system": system, "code": code}));
            }
        }
        if let Some(level) = rule.confidentiality {
            let current = labels::confidentiality_of(&json!({"meta": {"security": security.clone()}}));
            if current.is_none_or(|c| c < level) {
                security.retain(|l| l.get("system").and_then(Value::as_str) != Some(CONFIDENTIALITY_SYSTEM));
                security.push(level.coding());
                touched = true;
            }
        }
        if touched || security.len() != before {
            if let Some(obj) = resource.as_object_mut() {
                let meta = obj.entry("meta").or_insert_with(|| json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    meta.insert("security".into(), Value::Array(security));
                }
            }
            changed.push(rule.name.clone());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNOMED: &str = "http://snomed.info/sct";
    const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

    fn depression() -> LabellingRule {
        LabellingRule::from_spec(LabellingSpec {
            name: "mental-health".into(),
            types: vec!["Observation".into(), "Condition".into()],
            codes: vec![format!("{SNOMED}|35489007")],
            labels: vec![format!("{ACT}|PSY")],
            confidentiality: Some("R".into()),
        })
        .unwrap()
    }

    fn condition(code: &str, security: Value) -> Value {
        json!({"resourceType": "Condition", "code": {"coding": [{"system": SNOMED, "code": code}]},
            "subject": {"reference": "Patient/ann"}, "meta": {"security": security}})
    }

    fn codes(r: &Value) -> Vec<String> {
        let mut c: Vec<String> = labels::security_labels(r).into_iter().map(|(_, c)| c.to_string()).collect();
        c.sort();
        c
    }

    #[test]
    fn labels_matching_content() {
        let mut r = condition("35489007", json!([]));
        assert_eq!(apply(&[depression()], "Condition", &mut r), vec!["mental-health".to_string()]);
        assert_eq!(codes(&r), vec!["PSY", "R"]);
        assert_eq!(apply(&[depression()], "Condition", &mut r), Vec::<String>::new(), "a second pass changes nothing");
    }

    #[test]
    fn leaves_other_content_and_types_alone() {
        let mut r = condition("38341003", json!([]));
        assert!(apply(&[depression()], "Condition", &mut r).is_empty());
        assert!(codes(&r).is_empty());
        let mut p = json!({"resourceType": "Procedure", "code": {"coding": [{"system": SNOMED, "code": "35489007"}]}});
        assert!(apply(&[depression()], "Procedure", &mut p).is_empty());
    }

    #[test]
    fn raises_confidentiality_never_lowers_it() {
        let conf = |c: &str| json!({"system": CONFIDENTIALITY_SYSTEM, "code": c});
        let mut low = condition("35489007", json!([conf("N")]));
        apply(&[depression()], "Condition", &mut low);
        assert_eq!(codes(&low), vec!["PSY", "R"], "N replaced by R");
        let mut very = condition("35489007", json!([conf("V")]));
        apply(&[depression()], "Condition", &mut very);
        assert_eq!(codes(&very), vec!["PSY", "V"]);
    }

    #[test]
    fn rejects_bad_rules() {
        let ok = || LabellingSpec {
            name: "r".into(),
            types: vec!["Condition".into()],
            codes: vec![format!("{SNOMED}|1")],
            labels: vec![format!("{ACT}|PSY")],
            confidentiality: None,
        };
        assert!(LabellingRule::from_spec(ok()).is_ok());
        let cases: Vec<(LabellingSpec, &str)> = vec![
            (LabellingSpec { types: vec![], ..ok() }, "no types"),
            (LabellingSpec { types: vec!["Patient".into()], ..ok() }, "a type without code"),
            (LabellingSpec { types: vec!["Conditon".into()], ..ok() }, "a misspelt type"),
            (LabellingSpec { codes: vec![], ..ok() }, "no codes"),
            (LabellingSpec { codes: vec!["35489007".into()], ..ok() }, "a code without system"),
            (LabellingSpec { labels: vec![format!("{ACT}|NOPE")], ..ok() }, "an unknown label"),
            (
                LabellingSpec { labels: vec![format!("{CONFIDENTIALITY_SYSTEM}|R")], ..ok() },
                "confidentiality as a label",
            ),
            (LabellingSpec { labels: vec![], confidentiality: None, ..ok() }, "nothing to add"),
            (LabellingSpec { confidentiality: Some("X".into()), ..ok() }, "a bad level"),
        ];
        for (spec, why) in cases {
            assert!(LabellingRule::from_spec(spec).is_err(), "{why}");
        }
    }
}
