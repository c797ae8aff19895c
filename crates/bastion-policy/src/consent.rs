//! Patient Consent (R4 `Consent`, scope `patient-privacy`, status `active`) as access: for
//! one requester (who, for what purpose, reading or changing) and the Consents on file, an
//! [`AccessPredicate`] over the records of the consenting patients, which the caller's
//! predicate is narrowed by on every path.
//!
//! Evaluation (shared/reference/security-privacy.md §3.2): the root provision gives the base
//! decision (its `type`, else the `policyRule`: OPTIN, OPTINR, IMPLIED, IMPLIEDD,
//! GRANTORCHOICE permit; OPTOUT, OPTOUTE, NOCONSENT, EMRGONLY deny; else the deployment's
//! base); nested provisions are exceptions, and exceptions to exceptions. A provision matches
//! when every condition it states matches (OR within one list, AND across them; all listed
//! purposes and security labels must hold). When sibling exceptions both match, deny wins.
//! The root's own conditions scope the Consent: outside them the deployment's base applies.
//! Of several active Consents of one patient the latest (`dateTime`) counts; equally recent
//! ones must all permit.
//!
//! Request conditions (`period`, `actor`, `action`, `purpose`) are decided here, once per
//! requester; data conditions (`class`, `code`, `securityLabel`, `data` of meaning instance,
//! `dataPeriod` on the resource's `date` parameter) become predicates. Conditions this server
//! cannot check on data (`data` of another meaning, a `class` that is not a resource type, an
//! unknown label, a resource without a clinical date under a `dataPeriod`) fail safe: a deny
//! provision is taken to match, a permit provision not to.
//!
//! What it is not: break the glass (a `BTG` request is not narrowed by Consent; the caller
//! of this module decides that) and the patient's own access to their record (never
//! narrowed by their own Consent).

use bastion_fhir::labels::{self, ACT_REASON_SYSTEM, CONFIDENTIALITY_SYSTEM, Confidentiality, LabelKind};
use bastion_fhir::primitives::DateRange;
use bastion_search::AccessPredicate;
use bastion_search::query::{SystemMatch, TokenValue};
use serde_json::Value;

use crate::labels::LabelPolicy;

pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
pub const ACTION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentaction";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit,
    Deny,
}

impl Decision {
    fn predicate(self) -> AccessPredicate {
        match self {
            Decision::Permit => AccessPredicate::AllowAll,
            Decision::Deny => AccessPredicate::DenyAll,
        }
    }
}

/// What applies to a patient without a Consent, and to what a Consent does not speak about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BasePolicy {
    /// Nothing is shared without the patient's permit.
    OptIn,
    /// Everything the access rules allow is shared unless the patient's Consent denies it.
    #[default]
    OptOut,
}

impl BasePolicy {
    fn decision(self) -> Decision {
        match self {
            BasePolicy::OptIn => Decision::Deny,
            BasePolicy::OptOut => Decision::Permit,
        }
    }
}

/// What the request does to the data, in Consent's terms (`consentaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentAction {
    /// read, vread, search, history: `access` (and `use`, `disclose`).
    Access,
    /// update, patch, delete: `correct`.
    Correct,
}

impl ConsentAction {
    fn codes(self) -> &'static [&'static str] {
        match self {
            ConsentAction::Access => &["access", "use", "disclose"],
            ConsentAction::Correct => &["correct"],
        }
    }
}

/// Who is asking, as Consent provisions name actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// References that stand for the requester: its FHIR user (`Practitioner/x`,
    /// `RelatedPerson/y`), its organization, the CareTeams and Groups it belongs to.
    pub references: Vec<String>,
    pub purpose: String,
    pub action: ConsentAction,
    /// Milliseconds since the epoch.
    pub now: i64,
    /// The patient the requester is (a patient reading their own record), if any.
    pub own_patient: Option<String>,
}

/// One enforceable Consent, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub id: String,
    pub patient: String,
    date_time: Option<i64>,
    /// From `policyRule`.
    policy_rule: Option<Decision>,
    root: Provision,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Provision {
    decision: Option<Decision>,
    period: Option<(Option<i64>, Option<i64>)>,
    actors: Vec<String>,
    actions: Vec<String>,
    purposes: Vec<String>,
    security: Vec<(Option<String>, String)>,
    classes: Vec<String>,
    codes: Vec<TokenValue>,
    instances: Vec<(String, String)>,
    /// `dataPeriod`, on the resource's clinical date (the `date` search parameter).
    data_period: Option<(Option<i64>, Option<i64>)>,
    /// A data condition this server cannot check (see the module comment).
    unchecked: bool,
    children: Vec<Provision>,
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn codings(concept: &Value) -> impl Iterator<Item = &Value> {
    array(concept, "coding")
}

fn span(p: &Value) -> (Option<i64>, Option<i64>) {
    (
        str_at(p, "start").and_then(DateRange::parse).map(|r| r.low),
        str_at(p, "end").and_then(DateRange::parse).map(|r| r.high),
    )
}

impl Provision {
    fn parse(v: &Value) -> Provision {
        let mut p = Provision {
            decision: match str_at(v, "type") {
                Some("permit") => Some(Decision::Permit),
                Some("deny") => Some(Decision::Deny),
                _ => None,
            },
            period: v.get("period").map(span),
            ..Provision::default()
        };
        for actor in array(v, "actor") {
            if let Some(r) = actor.get("reference").and_then(|r| str_at(r, "reference")) {
                p.actors.push(r.to_string());
            } else {
                // An actor we cannot name matches nobody: keep the list non-empty.
                p.actors.push(String::new());
            }
        }
        for action in array(v, "action") {
            p.actions.extend(
                codings(action)
                    .filter(|c| str_at(c, "system").is_none_or(|s| s == ACTION_SYSTEM))
                    .filter_map(|c| str_at(c, "code").map(str::to_string)),
            );
            if codings(action).next().is_none() {
                p.actions.push(String::new());
            }
        }
        for purpose in array(v, "purpose") {
            let code = str_at(purpose, "code").unwrap_or("");
            let known = str_at(purpose, "system") == Some(ACT_REASON_SYSTEM);
            // A purpose we do not know is one no request has.
            p.purposes.push(if known { code.to_string() } else { format!("?{code}") });
        }
        for label in array(v, "securityLabel") {
            p.security
                .push((str_at(label, "system").map(str::to_string), str_at(label, "code").unwrap_or("").to_string()));
        }
        for class in array(v, "class") {
            let code = str_at(class, "code").unwrap_or("");
            let is_type = str_at(class, "system").is_none_or(|s| s == "http://hl7.org/fhir/resource-types")
                && bastion_fhir::definitions::is_resource_type(code);
            if is_type {
                p.classes.push(code.to_string());
            } else {
                p.unchecked = true;
            }
        }
        for code in array(v, "code") {
            for c in codings(code) {
                if let (Some(system), Some(code)) = (str_at(c, "system"), str_at(c, "code")) {
                    p.codes.push(TokenValue { system: SystemMatch::Is(system.into()), code: Some(code.into()) });
                }
            }
            if codings(code).next().is_none() {
                p.unchecked = true;
            }
        }
        p.data_period = v.get("dataPeriod").map(span);
        for d in array(v, "data") {
            let reference = d.get("reference").and_then(|r| str_at(r, "reference")).unwrap_or("");
            match (str_at(d, "meaning"), reference.split_once('/')) {
                (Some("instance"), Some((t, id))) if !id.contains('/') => p.instances.push((t.into(), id.into())),
                _ => p.unchecked = true,
            }
        }
        p.children = array(v, "provision").map(Provision::parse).collect();
        p
    }

    /// The conditions on the request, decided once per requester.
    fn request_matches(&self, who: &Requester) -> bool {
        let in_period =
            self.period.is_none_or(|(low, high)| low.is_none_or(|l| who.now >= l) && high.is_none_or(|h| who.now <= h));
        let actor = self.actors.is_empty() || self.actors.iter().any(|a| who.references.contains(a));
        let action = self.actions.is_empty() || self.actions.iter().any(|a| who.action.codes().contains(&a.as_str()));
        let purpose = self.purposes.iter().all(|p| labels::purpose_is_a(&who.purpose, p));
        in_period && actor && action && purpose
    }

    /// The data it speaks about, as a predicate; what cannot be checked makes a deny match
    /// and a permit not.
    fn data_matches(&self, decision: Decision, labels: &LabelPolicy) -> AccessPredicate {
        let unchecked = || match decision {
            Decision::Deny => AccessPredicate::AllowAll,
            Decision::Permit => AccessPredicate::DenyAll,
        };
        let mut all = Vec::new();
        if self.unchecked {
            all.push(unchecked());
        }
        if !self.classes.is_empty() {
            all.push(AccessPredicate::ResourceType(self.classes.clone()));
        }
        if !self.codes.is_empty() {
            all.push(AccessPredicate::Token { param: "code".into(), values: self.codes.clone() });
        }
        if !self.instances.is_empty() {
            all.push(AccessPredicate::Instances(self.instances.clone()));
        }
        if let Some((low, high)) = self.data_period {
            let overlaps = AccessPredicate::DateOverlaps { param: "date".into(), low, high };
            all.push(match decision {
                // A resource without a clinical date (or of a type without one) may lie in
                // the period: a deny covers it, a permit does not.
                Decision::Deny => AccessPredicate::Any(vec![
                    overlaps,
                    AccessPredicate::Not(Box::new(AccessPredicate::DateOverlaps {
                        param: "date".into(),
                        low: None,
                        high: None,
                    })),
                ]),
                Decision::Permit => overlaps,
            });
        }
        for (system, code) in &self.security {
            all.push(label_condition(system.as_deref(), code, labels).unwrap_or_else(unchecked));
        }
        AccessPredicate::All(all).simplified()
    }
}

/// What a `securityLabel` of a provision covers: a confidentiality covers resources at that
/// level or lower (R4: "a label R applies to all resources labeled R or lower"); a
/// sensitivity covers itself and its family; another known label, itself. `None`: unknown.
fn label_condition(system: Option<&str>, code: &str, policy: &LabelPolicy) -> Option<AccessPredicate> {
    let token = |values: Vec<TokenValue>| AccessPredicate::Token { param: "_security".into(), values };
    let value = |s: &str, c: &str| TokenValue { system: SystemMatch::Is(s.into()), code: Some(c.into()) };
    match labels::classify(system, code) {
        LabelKind::Unknown => None,
        LabelKind::Confidentiality(level) => {
            let at_most: Vec<TokenValue> = Confidentiality::ALL
                .into_iter()
                .filter(|c| *c <= level)
                .map(|c| value(CONFIDENTIALITY_SYSTEM, c.code()))
                .collect();
            let any_level: Vec<TokenValue> =
                Confidentiality::ALL.into_iter().map(|c| value(CONFIDENTIALITY_SYSTEM, c.code())).collect();
            // Unlabelled resources have their type's default.
            let low_types: Vec<String> =
                policy.confidentiality_by_type.iter().filter(|(_, c)| **c <= level).map(|(t, _)| t.clone()).collect();
            let high_types: Vec<String> =
                policy.confidentiality_by_type.iter().filter(|(_, c)| **c > level).map(|(t, _)| t.clone()).collect();
            let default_ok = if policy.default_confidentiality <= level {
                AccessPredicate::Not(Box::new(AccessPredicate::ResourceType(high_types)))
            } else {
                AccessPredicate::ResourceType(low_types)
            };
            let explicit_max = |values: Vec<TokenValue>| {
                AccessPredicate::Not(Box::new(AccessPredicate::Token {
                    param: "_security".into(),
                    values: Confidentiality::ALL
                        .into_iter()
                        .filter(|c| *c > level)
                        .map(|c| value(CONFIDENTIALITY_SYSTEM, c.code()))
                        .chain(values)
                        .collect(),
                }))
            };
            Some(AccessPredicate::Any(vec![
                // Labelled at most `level` (and not also higher).
                AccessPredicate::All(vec![token(at_most), explicit_max(Vec::new())]),
                AccessPredicate::All(vec![AccessPredicate::Not(Box::new(token(any_level))), default_ok]),
            ]))
        }
        LabelKind::Sensitivity => Some(token(
            labels::sensitivity_covers(code).into_iter().map(|c| value(labels::ACT_CODE_SYSTEM, c)).collect(),
        )),
        _ => Some(token(vec![value(system.unwrap_or(""), code)])),
    }
}

impl Consent {
    /// An enforceable Consent: `status` active, scope `patient-privacy`, a `patient`.
    /// Anything else is not enforced (`None`).
    pub fn from_resource(resource: &Value) -> Option<Consent> {
        if str_at(resource, "resourceType") != Some("Consent") || str_at(resource, "status") != Some("active") {
            return None;
        }
        let privacy = resource
            .get("scope")
            .map(|s| {
                codings(s)
                    .any(|c| str_at(c, "system") == Some(SCOPE_SYSTEM) && str_at(c, "code") == Some("patient-privacy"))
            })
            .unwrap_or(false);
        if !privacy {
            return None;
        }
        let patient = resource.get("patient").and_then(|p| str_at(p, "reference"))?.strip_prefix("Patient/")?;
        let policy_rule = resource.get("policyRule").and_then(|r| {
            codings(r).find_map(|c| match str_at(c, "code")? {
                "OPTIN" | "OPTINR" | "IMPLIED" | "IMPLIEDD" | "GRANTORCHOICE" => Some(Decision::Permit),
                "OPTOUT" | "OPTOUTE" | "NOCONSENT" | "EMRGONLY" => Some(Decision::Deny),
                _ => None,
            })
        });
        Some(Consent {
            id: str_at(resource, "id").unwrap_or("").to_string(),
            patient: patient.to_string(),
            date_time: str_at(resource, "dateTime").and_then(DateRange::parse).map(|r| r.low),
            policy_rule,
            root: resource.get("provision").map(Provision::parse).unwrap_or_default(),
        })
    }

    /// The instants (ms) at which a provision's `period` starts or ends: where the same
    /// requester's decision can change with time alone, and a cached one must be made again.
    pub fn period_boundaries(&self) -> Vec<i64> {
        fn walk(p: &Provision, out: &mut Vec<i64>) {
            if let Some((low, high)) = p.period {
                out.extend(low);
                // `high` is the last instant inside; the decision changes just after it.
                out.extend(high.map(|h| h + 1));
            }
            p.children.iter().for_each(|c| walk(c, out));
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Which of this patient's resources the requester may reach under this Consent.
    fn permits(&self, who: &Requester, base: BasePolicy, labels: &LabelPolicy) -> AccessPredicate {
        let decision = self.root.decision.or(self.policy_rule).unwrap_or(base.decision());
        if !self.root.request_matches(who) {
            return base.decision().predicate();
        }
        let scoped = self.root.data_matches(decision, labels);
        AccessPredicate::Any(vec![
            AccessPredicate::All(vec![scoped.clone(), permitted(&self.root, decision, who, labels)]),
            AccessPredicate::All(vec![AccessPredicate::Not(Box::new(scoped)), base.decision().predicate()]),
        ])
        .simplified()
    }
}

/// Under provision `p` whose decision is `decision`: what its exceptions leave permitted.
fn permitted(p: &Provision, decision: Decision, who: &Requester, labels: &LabelPolicy) -> AccessPredicate {
    let mut matched = Vec::new();
    let mut outcomes = Vec::new();
    for child in &p.children {
        // `type` is required on nested provisions; one without says nothing safe: deny.
        let d = child.decision.unwrap_or(Decision::Deny);
        if !child.request_matches(who) {
            continue;
        }
        let m = child.data_matches(d, labels);
        if m == AccessPredicate::DenyAll {
            continue;
        }
        let inner = permitted(child, d, who, labels);
        outcomes.push(AccessPredicate::Any(vec![AccessPredicate::Not(Box::new(m.clone())), inner]));
        matched.push(m);
    }
    if matched.is_empty() {
        return decision.predicate();
    }
    let any = AccessPredicate::Any(matched);
    AccessPredicate::Any(vec![
        AccessPredicate::All(vec![AccessPredicate::Not(Box::new(any.clone())), decision.predicate()]),
        // Every exception that matches must permit: deny wins between siblings.
        AccessPredicate::All(vec![any, AccessPredicate::All(outcomes)]),
    ])
    .simplified()
}

/// What the requester may reach of the records of patients with Consents on file (and, under
/// an opt-in base, of patients without one): `AllowAll` when no Consent narrows it.
pub fn predicate(consents: &[Consent], who: &Requester, base: BasePolicy, labels: &LabelPolicy) -> AccessPredicate {
    // The latest Consent of each patient counts (equally recent ones together).
    let mut latest: std::collections::BTreeMap<&str, Vec<&Consent>> = Default::default();
    for c in consents {
        let list = latest.entry(c.patient.as_str()).or_default();
        match list.first().map(|f| f.date_time) {
            Some(d) if c.date_time < d => {}
            Some(d) if c.date_time == d => list.push(c),
            _ => *list = vec![c],
        }
    }
    let own = who.own_patient.as_deref();
    // Patients grouped by what their Consents leave the requester.
    let mut groups: Vec<(AccessPredicate, Vec<String>)> = Vec::new();
    for (patient, list) in &latest {
        if Some(*patient) == own {
            continue;
        }
        let p = AccessPredicate::All(list.iter().map(|c| c.permits(who, base, labels)).collect()).simplified();
        if p == AccessPredicate::AllowAll {
            continue;
        }
        match groups.iter_mut().find(|(q, _)| *q == p) {
            Some((_, patients)) => patients.push(patient.to_string()),
            None => groups.push((p, vec![patient.to_string()])),
        }
    }
    let mut all: Vec<AccessPredicate> = groups
        .into_iter()
        .map(|(p, patients)| {
            AccessPredicate::Any(vec![AccessPredicate::Not(Box::new(AccessPredicate::PatientCompartment(patients))), p])
        })
        .collect();
    if base == BasePolicy::OptIn {
        // Records of patients without a Consent are nobody's to see but their own.
        let mut with_consent: Vec<String> = latest.keys().map(|p| p.to_string()).collect();
        with_consent.extend(own.map(str::to_string));
        all.push(AccessPredicate::Not(Box::new(AccessPredicate::OutsideCompartments(with_consent))));
    }
    AccessPredicate::All(all).simplified()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_search::AccessRow;
    use serde_json::json;

    const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

    fn consent(provision: Value) -> Value {
        json!({"resourceType": "Consent", "id": "c1", "status": "active",
            "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/ann"}, "dateTime": "2024-01-10",
            "policyRule": {"coding": [{"system": ACT, "code": "OPTIN"}]},
            "provision": provision})
    }

    fn who(refs: &[&str], purpose: &str) -> Requester {
        Requester {
            references: refs.iter().map(|r| r.to_string()).collect(),
            purpose: purpose.into(),
            action: ConsentAction::Access,
            now: DateRange::parse("2026-06-01").unwrap().low,
            own_patient: None,
        }
    }

    fn obs(patient: &str, labels: &[&str]) -> Value {
        let security: Vec<Value> = labels.iter().map(|c| json!({"system": ACT, "code": c})).collect();
        json!({"resourceType": "Observation", "id": "o", "subject": {"reference": format!("Patient/{patient}")},
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-1"}]}, "meta": {"security": security}})
    }

    fn sees(consents: &[Value], who: &Requester, base: BasePolicy, r: &Value) -> bool {
        let parsed: Vec<Consent> = consents.iter().filter_map(Consent::from_resource).collect();
        let p = predicate(&parsed, who, base, &LabelPolicy::default());
        let patient = r["subject"]["reference"].as_str().unwrap().trim_start_matches("Patient/").to_string();
        let compartments = vec![patient];
        let row = AccessRow {
            resource_type: r["resourceType"].as_str().unwrap(),
            id: r["id"].as_str().unwrap(),
            compartments: &compartments,
            resource: Some(r),
            referrers: &[],
        };
        p.admits(&row)
    }

    /// The reference's example: permit for treatment, deny PSY except to the care team or
    /// when breaking the glass.
    fn psy_example() -> Value {
        consent(json!({
        "type": "permit", "period": {"start": "2024-01-10", "end": "2029-01-10"},
        "purpose": [{"system": ACT_REASON_SYSTEM, "code": "TREAT"}],
        "provision": [{
            "type": "deny",
            "action": [{"coding": [{"system": ACTION_SYSTEM, "code": "access"}]}],
            "securityLabel": [{"system": ACT, "code": "PSY"}],
            "provision": [
                {"type": "permit", "actor": [{"role": {"text": "care team"}, "reference": {"reference": "CareTeam/ct1"}}]},
                {"type": "permit", "purpose": [{"system": ACT_REASON_SYSTEM, "code": "BTG"}]}
            ]}]}))
    }

    #[test]
    fn deny_exception_hides_labelled_data_but_not_the_rest() {
        let c = [psy_example()];
        let dr = who(&["Practitioner/dr"], "TREAT");
        assert!(sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])));
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &["PSY"])));
        assert!(sees(&c, &dr, BasePolicy::OptOut, &obs("bob", &["PSY"])), "another patient's record");
    }

    #[test]
    fn exception_to_the_exception_permits_the_care_team_and_break_the_glass() {
        let c = [psy_example()];
        assert!(sees(
            &c,
            &who(&["Practitioner/dr", "CareTeam/ct1"], "TREAT"),
            BasePolicy::OptOut,
            &obs("ann", &["PSY"])
        ));
        assert!(
            sees(&c, &who(&["Practitioner/dr"], "BTG"), BasePolicy::OptOut, &obs("ann", &["PSY"])),
            "BTG is-a TREAT too"
        );
    }

    #[test]
    fn root_conditions_scope_the_consent() {
        let c = [psy_example()];
        // Research is not treatment: the Consent does not speak, the base decides.
        let research = who(&["Practitioner/dr"], "HRESCH");
        assert!(sees(&c, &research, BasePolicy::OptOut, &obs("ann", &["PSY"])));
        assert!(!sees(&c, &research, BasePolicy::OptIn, &obs("ann", &[])));
        // Outside its period likewise.
        let mut late = who(&["Practitioner/dr"], "TREAT");
        late.now = DateRange::parse("2030-01-01").unwrap().low;
        assert!(sees(&c, &late, BasePolicy::OptOut, &obs("ann", &["PSY"])));
    }

    #[test]
    fn deny_of_an_actor_by_reference() {
        let c = [consent(json!({"type": "permit", "provision": [
            {"type": "deny", "actor": [{"role": {"text": "x"}, "reference": {"reference": "Organization/o2"}}]}]}))];
        assert!(!sees(&c, &who(&["Practitioner/a", "Organization/o2"], "TREAT"), BasePolicy::OptOut, &obs("ann", &[])));
        assert!(sees(&c, &who(&["Practitioner/a", "Organization/o1"], "TREAT"), BasePolicy::OptOut, &obs("ann", &[])));
    }

    #[test]
    fn opt_in_hides_patients_without_a_consent_but_not_from_themselves() {
        let dr = who(&["Practitioner/dr"], "TREAT");
        assert!(!sees(&[], &dr, BasePolicy::OptIn, &obs("bob", &[])));
        assert!(sees(&[], &dr, BasePolicy::OptOut, &obs("bob", &[])));
        let mut bob = who(&["Patient/bob"], "TREAT");
        bob.own_patient = Some("bob".into());
        assert!(sees(&[], &bob, BasePolicy::OptIn, &obs("bob", &[])));
        // A permitting Consent opens the record.
        let c = [consent(json!({"type": "permit"}))];
        assert!(sees(&c, &dr, BasePolicy::OptIn, &obs("ann", &[])));
    }

    #[test]
    fn policy_rule_gives_the_base_when_the_root_has_no_type() {
        let mut c = consent(json!({}));
        c["policyRule"] = json!({"coding": [{"system": ACT, "code": "OPTOUT"}]});
        let dr = who(&["Practitioner/dr"], "TREAT");
        assert!(!sees(&[c.clone()], &dr, BasePolicy::OptOut, &obs("ann", &[])));
        c["policyRule"] = json!({"coding": [{"system": ACT, "code": "OPTIN"}]});
        assert!(sees(&[c], &dr, BasePolicy::OptIn, &obs("ann", &[])));
    }

    #[test]
    fn rejects_consents_that_are_not_enforceable() {
        for (k, v) in [
            ("status", json!("draft")),
            ("status", json!("inactive")),
            ("scope", json!({"coding": [{"system": SCOPE_SYSTEM, "code": "research"}]})),
            ("patient", json!({"reference": "Group/g"})),
        ] {
            let mut c = consent(json!({"type": "deny"}));
            c[k] = v;
            assert!(Consent::from_resource(&c).is_none(), "{k}");
        }
    }

    #[test]
    fn period_boundaries_are_where_a_decision_can_change_with_time() {
        let c = Consent::from_resource(&psy_example()).unwrap();
        let start = DateRange::parse("2024-01-10").unwrap().low;
        let end = DateRange::parse("2029-01-10").unwrap().high + 1;
        assert_eq!(c.period_boundaries(), vec![start, end]);
        let dr = |now: i64| Requester { now, ..who(&["Practitioner/dr"], "TREAT") };
        let parsed = [c];
        let at = |now| predicate(&parsed, &dr(now), BasePolicy::OptOut, &LabelPolicy::default());
        assert_eq!(at(end - 1), at(start), "the same decision between two boundaries");
        assert_ne!(at(end - 1), at(end), "another one past the end");
    }

    #[test]
    fn latest_consent_wins() {
        let mut old = consent(json!({"type": "deny"}));
        old["dateTime"] = json!("2020-01-01");
        let new = consent(json!({"type": "permit"}));
        let dr = who(&["Practitioner/dr"], "TREAT");
        assert!(sees(&[old.clone(), new.clone()], &dr, BasePolicy::OptOut, &obs("ann", &[])));
        let mut tie = new.clone();
        tie["provision"] = json!({"type": "deny"});
        assert!(!sees(&[new, tie], &dr, BasePolicy::OptOut, &obs("ann", &[])), "equally recent: all must permit");
    }

    #[test]
    fn sibling_exceptions_that_disagree_deny() {
        let c = [consent(json!({"type": "permit", "provision": [
            {"type": "deny", "securityLabel": [{"system": ACT, "code": "HIV"}]},
            {"type": "permit", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}]}))];
        let dr = who(&["Practitioner/dr"], "TREAT");
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &["HIV"])));
        assert!(sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])));
    }

    #[test]
    fn data_period_on_the_clinical_date() {
        let dr = who(&["Practitioner/dr"], "TREAT");
        let dated = |d: &str| {
            let mut o = obs("ann", &[]);
            o["effectiveDateTime"] = json!(d);
            o
        };
        let c = [consent(json!({"type": "permit", "provision": [
            {"type": "deny", "dataPeriod": {"start": "2020-01-01", "end": "2020-12-31"}}]}))];
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &dated("2020-06-01")));
        assert!(sees(&c, &dr, BasePolicy::OptOut, &dated("2021-06-01")));
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])), "no date: a deny covers it");
        let c = [consent(json!({"type": "deny", "provision": [
            {"type": "permit", "dataPeriod": {"start": "2020-01-01", "end": "2020-12-31"}}]}))];
        assert!(sees(&c, &dr, BasePolicy::OptOut, &dated("2020-06-01")));
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])), "no date: a permit does not");
    }

    #[test]
    fn unchecked_conditions_fail_safe() {
        let dr = who(&["Practitioner/dr"], "TREAT");
        // A deny about data of another meaning is taken to match everything it could.
        let c = [consent(json!({"type": "permit", "provision": [
            {"type": "deny", "data": [{"meaning": "dependents", "reference": {"reference": "Observation/x"}}]}]}))];
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])));
        // A permit with one is taken to match nothing.
        let c = [consent(json!({"type": "deny", "provision": [
            {"type": "permit", "data": [{"meaning": "related", "reference": {"reference": "Observation/o"}}]}]}))];
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])));
    }

    #[test]
    fn data_instance_and_confidentiality_conditions() {
        let dr = who(&["Practitioner/dr"], "TREAT");
        let c = [consent(json!({"type": "permit", "provision": [
            {"type": "deny", "data": [{"meaning": "instance", "reference": {"reference": "Observation/o"}}]}]}))];
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])));
        let mut other = obs("ann", &[]);
        other["id"] = json!("p");
        assert!(sees(&c, &dr, BasePolicy::OptOut, &other));
        // A deny of "R" covers R and lower, unlabelled (N by default) too, but not V.
        let c = [consent(json!({"type": "permit", "provision": [
            {"type": "deny", "securityLabel": [{"system": CONFIDENTIALITY_SYSTEM, "code": "R"}]}]}))];
        let conf = |code: &str| {
            let mut o = obs("ann", &[]);
            o["meta"]["security"] = json!([{"system": CONFIDENTIALITY_SYSTEM, "code": code}]);
            o
        };
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &conf("R")));
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &conf("L")));
        assert!(!sees(&c, &dr, BasePolicy::OptOut, &obs("ann", &[])));
        assert!(sees(&c, &dr, BasePolicy::OptOut, &conf("V")));
    }
}
