//! Access predicates: what a caller may see, as a condition on stored resources.
//!
//! The policy layer produces one per interaction; the store compiles it into the SQL of
//! every read path (read, vread, search, includes, chains, history, conditional matching) and
//! re-checks each returned row with [`AccessPredicate::admits`]. It is deliberately a closed
//! enum: a store that does not know how to compile a variant cannot silently ignore it.
//!
//! What it is not: the decision of *which* predicate a caller gets (that is the policy
//! crate's), nor a general search language. It holds only what access rules need: patient
//! compartments, token matches (granular scope filters, labels, the stamped organization) and
//! their combinations.

use serde_json::Value;

use crate::query::{SystemMatch, TokenValue};

/// What the caller may see, as a predicate over stored resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPredicate {
    /// No restriction (the server's own work, or a caller granted everything).
    AllowAll,
    /// Nothing at all: the result of a policy that grants no access.
    DenyAll,
    /// Only resources in the compartment of one of these patients (Patient resources whose
    /// id is listed count as members of their own compartment).
    PatientCompartment(Vec<String>),
    /// Resources that a current resource in the compartment of one of these patients refers
    /// to (how a `patient/` caller reaches the Practitioner, Organization, Medication, ...
    /// named in the patient's own record).
    ReferencedFromCompartment(Vec<String>),
    /// Resources of one of these types (how a rule about some types enters the predicate of
    /// an interaction across all types).
    ResourceType(Vec<String>),
    /// These resources, as `(type, id)` (a Consent provision about named data).
    Instances(Vec<(String, String)>),
    /// Resources in the compartment of some patient *not* listed (Patient resources count as
    /// members of their own): `Not` of it keeps what belongs to the listed patients, or to
    /// nobody (how an opt-in base policy hides the records of patients without a Consent).
    OutsideCompartments(Vec<String>),
    /// Resources with at least one value of the token parameter `param` matching one of
    /// `values` (the same match as the search `param=values`).
    Token { param: String, values: Vec<TokenValue> },
    /// Resources with a value of the date parameter `param` whose span overlaps
    /// `[low, high]` (milliseconds since the epoch; `None` unbounded): a Consent's
    /// `dataPeriod` on the resource's clinical date.
    DateOverlaps { param: String, low: Option<i64>, high: Option<i64> },
    /// Resources with at least one value of `param` that matches none of `values`: how a
    /// label policy finds a label outside what the caller may see (`Not` of it admits only
    /// resources whose every label is allowed, including those without labels).
    TokenOtherThan { param: String, values: std::sync::Arc<[TokenValue]> },
    /// Every one of these (an empty list admits everything).
    All(Vec<AccessPredicate>),
    /// At least one of these (an empty list admits nothing).
    Any(Vec<AccessPredicate>),
    /// Not this: how a deny rule removes what it names.
    Not(Box<AccessPredicate>),
}

/// How much of a stored body the in-memory evaluator needs (see
/// [`AccessPredicate::content_need`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContentNeed {
    Nothing,
    /// `resourceType` and `meta`.
    Meta,
    Everything,
}

/// What the in-memory evaluator knows of a stored version.
#[derive(Debug, Clone, Copy)]
pub struct AccessRow<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    /// The patient compartments the version belongs to.
    pub compartments: &'a [String],
    /// The version's content; `None` for a delete tombstone (which has no token values).
    pub resource: Option<&'a Value>,
    /// The patients (of those the predicate names) whose compartment holds a current resource
    /// referring to this one; looked up by the store only when [`AccessPredicate::referrer_patients`]
    /// asks for it, empty otherwise.
    pub referrers: &'a [String],
}

impl AccessPredicate {
    /// The in-memory evaluator: does this stored version pass the predicate?
    pub fn admits(&self, row: &AccessRow<'_>) -> bool {
        match self {
            AccessPredicate::AllowAll => true,
            AccessPredicate::DenyAll => false,
            AccessPredicate::PatientCompartment(patients) => {
                (row.resource_type == "Patient" && patients.iter().any(|p| p == row.id))
                    || row.compartments.iter().any(|c| patients.contains(c))
            }
            AccessPredicate::ResourceType(types) => types.iter().any(|t| t == row.resource_type),
            AccessPredicate::Instances(list) => list.iter().any(|(t, id)| t == row.resource_type && id == row.id),
            AccessPredicate::OutsideCompartments(patients) => {
                (row.resource_type == "Patient" && !patients.iter().any(|p| p == row.id))
                    || row.compartments.iter().any(|c| !patients.contains(c))
            }
            AccessPredicate::ReferencedFromCompartment(patients) => row.referrers.iter().any(|p| patients.contains(p)),
            AccessPredicate::Token { param, values } => row.resource.is_some_and(|r| {
                crate::index::token_rows(r, param)
                    .iter()
                    .any(|t| values.iter().any(|v| token_matches(v, t.system.as_deref(), &t.code)))
            }),
            AccessPredicate::TokenOtherThan { param, values } => row.resource.is_some_and(|r| {
                crate::index::token_rows(r, param)
                    .iter()
                    .any(|t| !values.iter().any(|v| token_matches(v, t.system.as_deref(), &t.code)))
            }),
            AccessPredicate::DateOverlaps { param, low, high } => row.resource.is_some_and(|r| {
                crate::index::date_rows(r, param)
                    .iter()
                    .any(|d| low.is_none_or(|l| d.high >= l) && high.is_none_or(|h| d.low <= h))
            }),
            AccessPredicate::All(ps) => ps.iter().all(|p| p.admits(row)),
            AccessPredicate::Any(ps) => ps.iter().any(|p| p.admits(row)),
            AccessPredicate::Not(p) => !p.admits(row),
        }
    }

    /// How much of the stored body evaluating it needs: labels and tags live in `meta`, so
    /// a predicate about them (every caller's label predicate) needs only that.
    pub fn content_need(&self) -> ContentNeed {
        let of_param = |p: &str| {
            if matches!(p, "_security" | "_tag" | bastion_fhir::labels::LABEL_CLASS_PARAM) {
                ContentNeed::Meta
            } else {
                ContentNeed::Everything
            }
        };
        match self {
            AccessPredicate::Token { param, .. } | AccessPredicate::TokenOtherThan { param, .. } => of_param(param),
            AccessPredicate::DateOverlaps { .. } => ContentNeed::Everything,
            AccessPredicate::All(ps) | AccessPredicate::Any(ps) => {
                ps.iter().map(AccessPredicate::content_need).max().unwrap_or(ContentNeed::Nothing)
            }
            AccessPredicate::Not(p) => p.content_need(),
            _ => ContentNeed::Nothing,
        }
    }

    /// Does evaluating it need the resource's content (not only type, id and compartments)?
    /// Callers parse a stored body only when it does.
    pub fn needs_content(&self) -> bool {
        match self {
            AccessPredicate::AllowAll
            | AccessPredicate::DenyAll
            | AccessPredicate::PatientCompartment(_)
            | AccessPredicate::ResourceType(_)
            | AccessPredicate::Instances(_)
            | AccessPredicate::OutsideCompartments(_)
            | AccessPredicate::ReferencedFromCompartment(_) => false,
            AccessPredicate::Token { .. }
            | AccessPredicate::TokenOtherThan { .. }
            | AccessPredicate::DateOverlaps { .. } => true,
            AccessPredicate::All(ps) | AccessPredicate::Any(ps) => ps.iter().any(AccessPredicate::needs_content),
            AccessPredicate::Not(p) => p.needs_content(),
        }
    }

    /// The patients whose referrers the in-memory check needs (see [`AccessRow::referrers`]);
    /// empty when no part of the predicate asks.
    pub fn referrer_patients(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_referrer_patients(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_referrer_patients(&self, out: &mut Vec<String>) {
        match self {
            AccessPredicate::ReferencedFromCompartment(ps) => out.extend(ps.iter().cloned()),
            AccessPredicate::All(ps) | AccessPredicate::Any(ps) => {
                ps.iter().for_each(|p| p.collect_referrer_patients(out))
            }
            AccessPredicate::Not(p) => p.collect_referrer_patients(out),
            _ => {}
        }
    }

    /// The same predicate with constant parts folded: `All` / `Any` of one, `AllowAll` and
    /// `DenyAll` absorbed. The store compiles smaller SQL, and a predicate that reduces to
    /// `DenyAll` is recognised as granting nothing.
    pub fn simplified(self) -> AccessPredicate {
        use AccessPredicate::*;
        match self {
            All(ps) => {
                let mut out = Vec::new();
                for p in ps.into_iter().map(AccessPredicate::simplified) {
                    match p {
                        AllowAll => {}
                        DenyAll => return DenyAll,
                        All(inner) => out.extend(inner),
                        p => out.push(p),
                    }
                }
                match out.len() {
                    0 => AllowAll,
                    1 => out.pop().unwrap_or(AllowAll),
                    _ => All(out),
                }
            }
            Any(ps) => {
                let mut out = Vec::new();
                for p in ps.into_iter().map(AccessPredicate::simplified) {
                    match p {
                        DenyAll => {}
                        AllowAll => return AllowAll,
                        Any(inner) => out.extend(inner),
                        p if !out.contains(&p) => out.push(p),
                        _ => {}
                    }
                }
                // Absorption: `a OR (a AND b)` is `a`.
                let absorbed: Vec<bool> = out
                    .iter()
                    .map(|p| matches!(p, All(parts) if out.iter().any(|q| q != p && parts.contains(q))))
                    .collect();
                let mut out: Vec<AccessPredicate> =
                    out.into_iter().zip(absorbed).filter(|(_, gone)| !gone).map(|(p, _)| p).collect();
                match out.len() {
                    0 => DenyAll,
                    1 => out.pop().unwrap_or(DenyAll),
                    _ => Any(out),
                }
            }
            Not(p) => match p.simplified() {
                AllowAll => DenyAll,
                DenyAll => AllowAll,
                Not(inner) => *inner,
                p => Not(Box::new(p)),
            },
            PatientCompartment(ps) | ResourceType(ps) | ReferencedFromCompartment(ps) if ps.is_empty() => DenyAll,
            Instances(list) if list.is_empty() => DenyAll,
            Token { values, .. } if values.is_empty() => DenyAll,
            p => p,
        }
    }
}

/// One token search value against one index row, as the SQL compiles it.
pub fn token_matches(v: &TokenValue, system: Option<&str>, code: &str) -> bool {
    match (&v.system, &v.code) {
        (SystemMatch::Any, Some(c)) => c == code,
        (SystemMatch::NoSystem, Some(c)) => c == code && system.is_none(),
        (SystemMatch::Is(s), Some(c)) => c == code && system == Some(s.as_str()),
        (SystemMatch::Is(s), None) => system == Some(s.as_str()),
        (SystemMatch::Any | SystemMatch::NoSystem, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row<'a>(t: &'a str, id: &'a str, c: &'a [String], r: Option<&'a Value>) -> AccessRow<'a> {
        AccessRow { resource_type: t, id, compartments: c, resource: r, referrers: &[] }
    }

    fn lab() -> AccessPredicate {
        AccessPredicate::Token {
            param: "category".into(),
            values: vec![TokenValue {
                system: SystemMatch::Is("http://terminology.hl7.org/CodeSystem/observation-category".into()),
                code: Some("laboratory".into()),
            }],
        }
    }

    fn observation(category: &str) -> Value {
        json!({"resourceType": "Observation", "id": "o", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "code": {"text": "x"}})
    }

    #[test]
    fn compartment_predicate_admits_members_only() {
        let p = AccessPredicate::PatientCompartment(vec!["a".into()]);
        let a = ["a".to_string()];
        let b = ["b".to_string()];
        assert!(p.admits(&row("Patient", "a", &a, None)));
        assert!(p.admits(&row("Observation", "o1", &a, None)));
        assert!(!p.admits(&row("Observation", "o2", &b, None)));
        assert!(!p.admits(&row("Observation", "o3", &[], None)));
        assert!(!p.admits(&row("Patient", "b", &b, None)));
    }

    #[test]
    fn deny_all_denies_and_allow_all_allows() {
        let a = ["a".to_string()];
        assert!(!AccessPredicate::DenyAll.admits(&row("Patient", "a", &a, None)));
        assert!(AccessPredicate::AllowAll.admits(&row("Patient", "a", &[], None)));
    }

    #[test]
    fn token_predicate_matches_the_resource_content() {
        let (l, v) = (observation("laboratory"), observation("vital-signs"));
        assert!(lab().admits(&row("Observation", "o", &[], Some(&l))));
        assert!(!lab().admits(&row("Observation", "o", &[], Some(&v))));
        assert!(!lab().admits(&row("Observation", "o", &[], None)), "a tombstone has no category");
    }

    #[test]
    fn token_predicate_rejects_a_code_under_another_system() {
        let mut other = observation("laboratory");
        other["category"][0]["coding"][0]["system"] = json!("http://example.org/not-the-category-system");
        assert!(!lab().admits(&row("Observation", "o", &[], Some(&other))));
    }

    #[test]
    fn not_inverts_and_combinations_nest() {
        let l = observation("laboratory");
        let a = ["a".to_string()];
        let in_a_and_lab = AccessPredicate::All(vec![AccessPredicate::PatientCompartment(vec!["a".into()]), lab()]);
        assert!(in_a_and_lab.admits(&row("Observation", "o", &a, Some(&l))));
        assert!(!in_a_and_lab.admits(&row("Observation", "o", &[], Some(&l))));
        assert!(!AccessPredicate::Not(Box::new(lab())).admits(&row("Observation", "o", &a, Some(&l))));
        assert!(AccessPredicate::Any(vec![AccessPredicate::DenyAll, lab()]).admits(&row(
            "Observation",
            "o",
            &a,
            Some(&l)
        )));
        assert!(!AccessPredicate::Any(vec![]).admits(&row("Observation", "o", &a, Some(&l))));
        assert!(AccessPredicate::All(vec![]).admits(&row("Observation", "o", &a, Some(&l))));
    }

    #[test]
    fn simplification_keeps_meaning() {
        use AccessPredicate::*;
        let c = PatientCompartment(vec!["a".into()]);
        assert_eq!(Any(vec![DenyAll, c.clone()]).simplified(), c);
        assert_eq!(Any(vec![AllowAll, c.clone()]).simplified(), AllowAll);
        assert_eq!(All(vec![AllowAll, c.clone()]).simplified(), c);
        assert_eq!(All(vec![DenyAll, c.clone()]).simplified(), DenyAll);
        assert_eq!(Any(vec![]).simplified(), DenyAll);
        assert_eq!(Not(Box::new(AllowAll)).simplified(), DenyAll);
        assert_eq!(PatientCompartment(vec![]).simplified(), DenyAll);
        assert_eq!(Any(vec![c.clone(), c.clone()]).simplified(), c);
        assert_eq!(
            Any(vec![All(vec![c.clone(), AllowAll, ResourceType(vec!["X".into()])]), c.clone()]).simplified(),
            c
        );
    }

    #[test]
    fn referenced_from_compartment_admits_what_the_patients_record_refers_to() {
        let p = AccessPredicate::ReferencedFromCompartment(vec!["a".into()]);
        let a = ["a".to_string()];
        let b = ["b".to_string()];
        assert!(p.admits(&AccessRow {
            resource_type: "Practitioner",
            id: "d",
            compartments: &[],
            resource: None,
            referrers: &a
        }));
        assert!(!p.admits(&AccessRow {
            resource_type: "Practitioner",
            id: "d",
            compartments: &[],
            resource: None,
            referrers: &b
        }));
        assert!(!p.admits(&row("Practitioner", "d", &[], None)));
        assert_eq!(
            AccessPredicate::Any(vec![AccessPredicate::DenyAll, p.clone()]).referrer_patients(),
            vec!["a".to_string()]
        );
        assert!(lab().referrer_patients().is_empty());
    }

    #[test]
    fn only_token_predicates_need_content() {
        assert!(!AccessPredicate::PatientCompartment(vec!["a".into()]).needs_content());
        assert!(AccessPredicate::Not(Box::new(lab())).needs_content());
    }
}
