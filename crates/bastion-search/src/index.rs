//! Resource -> index rows, computed once at write time and stored beside the resource.
//!
//! Two things come out of a resource here: its memberships in patient compartments (from
//! the R4 Patient CompartmentDefinition and nothing else, so that a reference such as
//! `Observation.focus` never makes data visible to a patient), and the token rows that
//! token searches match against.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use bastion_fhir::definitions::{self, SearchParamType};
use serde_json::Value;

use crate::path::SimplePath;

/// One row of the token index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenRow {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
}

/// Everything the store writes beside a resource version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexRows {
    /// Ids of every patient whose compartment holds this resource (sorted, unique).
    pub compartments: Vec<String>,
    pub tokens: Vec<TokenRow>,
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

/// What to evaluate on a resource of one type, parsed once from the definitions.
struct IndexPlan {
    /// The resource is in its own compartment (Patient).
    own_compartment: bool,
    compartment_paths: Vec<SimplePath>,
    token_paths: Vec<(String, SimplePath)>,
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
            .filter_map(|p| p.expression.as_deref().and_then(SimplePath::parse))
            .collect(),
        token_paths: definitions::search_params(resource_type)
            .into_iter()
            .filter(|p| p.kind == SearchParamType::Token && p.code != "_id")
            .filter_map(|p| Some((p.code.clone(), p.expression.as_deref().and_then(SimplePath::parse)?)))
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
        for v in path.select(resource) {
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

/// Every index row for a resource (which must carry its final `id`).
pub fn extract_index(resource: &Value) -> IndexRows {
    let rtype = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
    let mut tokens = Vec::new();
    for (code, path) in &plan_for(rtype).token_paths {
        for v in path.select(resource) {
            token_rows_of(code, v, &mut tokens);
        }
    }
    tokens.sort();
    tokens.dedup();
    IndexRows { compartments: patient_compartments(resource), tokens }
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
    fn organization_is_in_no_patient_compartment() {
        let o = json!({"resourceType":"Organization","id":"o","name":"x"});
        assert!(extract_index(&o).compartments.is_empty());
    }
}
