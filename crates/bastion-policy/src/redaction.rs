//! What a caller gets of a resource it may see: elements it may not see removed (DS4P inline
//! labels) or masked (masking rules), and the copy marked so that nobody mistakes it for the
//! record (`REDACTED`, `MASKED` in `meta.security`; such a copy cannot be stored back).
//!
//! Inline labels: a resource whose `meta.security` carries `PROCESSINLINELABEL` may label any
//! element with the extension [`INLINE_LABEL_URL`] (a `valueCoding`); an element whose label
//! the caller's [`Clearance`] does not see is removed, and with it everything inside it. A
//! label on a primitive (in its `_element` sibling) removes the primitive; one on an item of
//! a primitive array removes the whole array (fail safe: the positions of the rest would
//! otherwise shift).
//!
//! Masking rules (`[[masking]]`): for callers with one of the rule's roles, the named
//! top-level elements of the rule's types are replaced by the data-absent-reason `masked`.
//!
//! What it is not: whether the caller sees the resource at all (labels.rs, consent.rs).

use bastion_fhir::labels::{ACT_CODE_SYSTEM, OBSERVATION_VALUE_SYSTEM};
use serde_json::{Value, json};

use crate::labels::Clearance;

pub const INLINE_LABEL_URL: &str =
    "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-inline-sec-label";
pub const DATA_ABSENT_REASON_URL: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";

/// Could this stored body carry inline labels (`PROCESSINLINELABEL`)? A byte scan, so that
/// the common body is never parsed.
pub fn may_have_inline_labels(body: &[u8]) -> bool {
    bastion_fhir::labels::bytes_contain(body, b"PROCESSINLINELABEL")
}

fn declares_inline_labels(resource: &Value) -> bool {
    bastion_fhir::labels::security_labels(resource)
        .iter()
        .any(|(s, c)| *s == Some(ACT_CODE_SYSTEM) && *c == "PROCESSINLINELABEL")
}

/// Does this element carry an inline label the caller may not see?
fn hidden(element: &Value, clearance: &Clearance) -> bool {
    element.get("extension").and_then(Value::as_array).is_some_and(|exts| {
        exts.iter().filter(|e| e.get("url").and_then(Value::as_str) == Some(INLINE_LABEL_URL)).any(|e| {
            let coding = e.get("valueCoding");
            let system = coding.and_then(|c| c.get("system")).and_then(Value::as_str);
            match coding.and_then(|c| c.get("code")).and_then(Value::as_str) {
                Some(code) => !clearance.sees_label(system, code),
                // A label without a code is no label anyone knows.
                None => true,
            }
        })
    })
}

/// Removes what `clearance` may not see; true when anything was removed.
fn prune(v: &mut Value, clearance: &Clearance) -> bool {
    let mut removed = false;
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let Some(child) = map.get_mut(&k) else { continue };
                let primitive_key = k.strip_prefix('_').map(str::to_string);
                let gone = match child {
                    Value::Object(_) => hidden(child, clearance),
                    Value::Array(items) => {
                        if primitive_key.is_some() {
                            items.iter().any(|i| hidden(i, clearance))
                        } else {
                            let before = items.len();
                            items.retain(|i| !hidden(i, clearance));
                            removed |= items.len() != before;
                            false
                        }
                    }
                    _ => false,
                };
                if gone {
                    map.remove(&k);
                    match &primitive_key {
                        Some(base) => {
                            map.remove(base);
                        }
                        None => {
                            map.remove(&format!("_{k}"));
                        }
                    }
                    removed = true;
                    continue;
                }
                if let Some(child) = map.get_mut(&k) {
                    removed |= prune(child, clearance);
                }
                if map.get(&k).and_then(Value::as_array).is_some_and(|a| a.is_empty()) {
                    map.remove(&k);
                }
            }
        }
        Value::Array(items) => {
            for i in items.iter_mut() {
                removed |= prune(i, clearance);
            }
        }
        _ => {}
    }
    removed
}

/// Adds an integrity mark (`REDACTED`, `MASKED`) to `meta.security`, once.
pub fn mark(resource: &mut Value, code: &str) {
    let Some(obj) = resource.as_object_mut() else { return };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else { return };
    let security = meta.entry("security").or_insert_with(|| json!([]));
    if let Some(list) = security.as_array_mut()
        && !list.iter().any(|l| {
            l.get("system").and_then(Value::as_str) == Some(OBSERVATION_VALUE_SYSTEM)
                && l.get("code").and_then(Value::as_str) == Some(code)
        })
    {
        list.push(json!({"system": OBSERVATION_VALUE_SYSTEM, "code": code}));
    }
}

/// Removes the elements whose inline labels the caller may not see and marks the copy
/// `REDACTED`; true when it did. A resource that does not declare `PROCESSINLINELABEL` is
/// left as it is.
pub fn redact(resource: &mut Value, clearance: &Clearance) -> bool {
    if !declares_inline_labels(resource) {
        return false;
    }
    let removed = prune(resource, clearance);
    if removed {
        mark(resource, "REDACTED");
    }
    removed
}

/// One `[[masking]]` rule, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskingRule {
    pub name: String,
    pub types: Vec<String>,
    /// Top-level element names.
    pub elements: Vec<String>,
    /// The callers who see the masked copy: those with one of these roles.
    pub roles: Vec<String>,
}

impl MaskingRule {
    pub fn applies(&self, resource_type: &str, roles: &[String]) -> bool {
        self.types.iter().any(|t| t == resource_type) && self.roles.iter().any(|r| roles.contains(r))
    }
}

/// Replaces the rules' elements by the data-absent-reason `masked` and marks the copy
/// `MASKED`; true when anything was masked.
pub fn mask(resource: &mut Value, rules: &[&MaskingRule]) -> bool {
    let absent = || json!({"extension": [{"url": DATA_ABSENT_REASON_URL, "valueCode": "masked"}]});
    let mut masked = false;
    let Some(obj) = resource.as_object_mut() else { return false };
    for name in rules.iter().flat_map(|r| r.elements.iter()) {
        let Some(value) = obj.get_mut(name) else { continue };
        match value {
            Value::Array(items) => items.iter_mut().for_each(|i| *i = absent()),
            Value::Object(_) => *value = absent(),
            _ => {
                obj.remove(name);
                obj.insert(format!("_{name}"), absent());
            }
        }
        masked = true;
    }
    if masked {
        mark(resource, "MASKED");
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{LabelPolicy, Sensitivities};
    use bastion_fhir::labels::{CONFIDENTIALITY_SYSTEM, Confidentiality};

    fn label(system: &str, code: &str) -> Value {
        json!({"url": INLINE_LABEL_URL, "valueCoding": {"system": system, "code": code}})
    }

    fn patient() -> Value {
        json!({"resourceType": "Patient", "id": "p",
            "meta": {"security": [{"system": ACT_CODE_SYSTEM, "code": "PROCESSINLINELABEL"},
                                  {"system": CONFIDENTIALITY_SYSTEM, "code": "R"}]},
            "name": [{"family": "Public"}, {"family": "Secret", "extension": [label(CONFIDENTIALITY_SYSTEM, "R")]}],
            "address": [{"city": "Springfield", "extension": [label(ACT_CODE_SYSTEM, "SDV")]}],
            "birthDate": "1970-01-01", "_birthDate": {"extension": [label(CONFIDENTIALITY_SYSTEM, "V")]},
            "gender": "female"})
    }

    fn clearance(conf: Confidentiality, sens: &[&str]) -> Clearance {
        Clearance::new(conf, Sensitivities::from_grants(sens.iter().copied()), "TREAT", false, LabelPolicy::default())
    }

    fn marks(r: &Value) -> Vec<String> {
        bastion_fhir::labels::security_labels(r)
            .into_iter()
            .filter(|(s, _)| *s == Some(OBSERVATION_VALUE_SYSTEM))
            .map(|(_, c)| c.to_string())
            .collect()
    }

    #[test]
    fn removes_elements_above_the_clearance_and_marks_the_copy() {
        let mut r = patient();
        assert!(redact(&mut r, &clearance(Confidentiality::N, &[])));
        assert_eq!(r["name"], json!([{"family": "Public"}]));
        assert!(r.get("address").is_none(), "the only address was labelled SDV");
        assert!(r.get("birthDate").is_none() && r.get("_birthDate").is_none());
        assert_eq!(r["gender"], "female");
        assert_eq!(marks(&r), vec!["REDACTED"]);
    }

    #[test]
    fn keeps_what_the_clearance_sees() {
        let mut r = patient();
        assert!(redact(&mut r, &clearance(Confidentiality::R, &["SDV"])), "birthDate is V");
        assert_eq!(r["name"].as_array().unwrap().len(), 2);
        assert_eq!(r["address"][0]["city"], "Springfield");
        let mut all = patient();
        assert!(!redact(&mut all, &clearance(Confidentiality::V, &["SDV"])));
        assert_eq!(all, patient(), "nothing removed, nothing marked");
    }

    #[test]
    fn ignores_inline_labels_without_processinlinelabel() {
        let mut r = patient();
        r["meta"]["security"] = json!([]);
        assert!(!redact(&mut r, &clearance(Confidentiality::U, &[])));
        assert_eq!(r["name"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn rejects_an_unknown_inline_label_by_removing_its_element() {
        let mut r = patient();
        r["gender"] = json!("female");
        r["_gender"] = json!({"extension": [label("http://example.org/l", "x")]});
        redact(&mut r, &clearance(Confidentiality::V, &["*"]));
        assert!(r.get("gender").is_none());
    }

    #[test]
    fn masks_named_elements_for_the_rules_roles() {
        let rule = MaskingRule {
            name: "contacts".into(),
            types: vec!["Patient".into()],
            elements: vec!["address".into(), "birthDate".into(), "telecom".into()],
            roles: vec!["front-desk".into()],
        };
        assert!(rule.applies("Patient", &["front-desk".into()]));
        assert!(!rule.applies("Patient", &["clinician".into()]));
        assert!(!rule.applies("Observation", &["front-desk".into()]));
        let mut r = json!({"resourceType": "Patient", "address": [{"city": "x"}, {"city": "y"}], "birthDate": "1970"});
        assert!(mask(&mut r, &[&rule]));
        assert_eq!(r["address"][1]["extension"][0]["valueCode"], "masked");
        assert!(r.get("birthDate").is_none());
        assert_eq!(r["_birthDate"]["extension"][0]["valueCode"], "masked");
        assert_eq!(marks(&r), vec!["MASKED"]);
    }
}
