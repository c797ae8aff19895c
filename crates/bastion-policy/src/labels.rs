//! Security labels as access: what a caller may see of labelled data, as an
//! [`AccessPredicate`] over `_security` (indexed, so it runs inside the SQL of every read
//! path and is re-checked on every row like the rest of the caller's predicate).
//!
//! A resource is visible when every one of its `meta.security` labels is one the caller may
//! see (R4 security-labels.html, DS4P):
//! - a confidentiality up to the caller's clearance (`U < L < M < N < R < V`); a resource
//!   without one has its type's default confidentiality;
//! - a sensitivity (HIV, PSY, SUD, ...) or compartment label that one of the caller's roles
//!   holds (`SPI` holds its family);
//! - a handling caveat (obligation, refrain policy, privacy law) or an integrity fact:
//!   these deny nothing, they travel with the data;
//! - a purpose of use the request's purpose is a kind of (data labelled `HRESCH` serves
//!   research only);
//! - test data (`HTEST`) where the interaction includes test data (searches leave it out
//!   unless asked for it);
//! - and nothing else: an unknown label, or a known code in a system it does not belong to,
//!   hides the resource from everyone (fail closed).
//!
//! Break the glass (purpose `BTG`, granted only to users allowed it) reveals every
//! sensitivity and confidentiality up to the deployment's break-the-glass ceiling (`R`
//! unless configured `V`).
//!
//! What it is not: Consent (the patient's choices) and element-level redaction, which act on
//! top of this.

use std::collections::BTreeMap;

use bastion_fhir::labels::{
    self, ACT_CODE_SYSTEM, ACT_REASON_SYSTEM, Confidentiality, LABEL_CLASS_PARAM, SENSITIVITY, TEST_DATA,
};
use bastion_search::AccessPredicate;
use bastion_search::query::{SystemMatch, TokenValue};

/// The deployment's label policy (`[privacy]`), compiled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelPolicy {
    /// The confidentiality of a resource that names none.
    pub default_confidentiality: Confidentiality,
    /// Per-type defaults over `default_confidentiality`.
    pub confidentiality_by_type: BTreeMap<String, Confidentiality>,
    /// The highest confidentiality break the glass reveals.
    pub break_glass_ceiling: Confidentiality,
}

impl Default for LabelPolicy {
    fn default() -> Self {
        LabelPolicy {
            default_confidentiality: Confidentiality::N,
            confidentiality_by_type: BTreeMap::new(),
            break_glass_ceiling: Confidentiality::R,
        }
    }
}

impl LabelPolicy {
    /// The confidentiality of a `resource_type` resource without a confidentiality label.
    pub fn default_for(&self, resource_type: &str) -> Confidentiality {
        self.confidentiality_by_type.get(resource_type).copied().unwrap_or(self.default_confidentiality)
    }
}

/// Which sensitivity labels a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sensitivities {
    All,
    /// These codes (already expanded: holding `SPI` lists its family).
    Only(Vec<&'static str>),
}

impl Sensitivities {
    /// From the roles' `sensitivity` lists: `*` is every code; codes that are not
    /// sensitivity codes grant nothing.
    pub fn from_grants<'a>(grants: impl IntoIterator<Item = &'a str>) -> Sensitivities {
        let mut out: Vec<&'static str> = Vec::new();
        for g in grants {
            if g == "*" {
                return Sensitivities::All;
            }
            out.extend(labels::sensitivity_covers(g));
        }
        out.sort_unstable();
        out.dedup();
        Sensitivities::Only(out)
    }

    fn codes(&self) -> Vec<&'static str> {
        match self {
            Sensitivities::All => SENSITIVITY.to_vec(),
            Sensitivities::Only(codes) => codes.clone(),
        }
    }
}

/// What one caller may see of labelled data, compiled once per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clearance {
    /// The highest confidentiality it sees (after break the glass).
    confidentiality: Confidentiality,
    sensitivities: Sensitivities,
    /// The request's purpose of use (v3-ActReason).
    purpose: String,
    /// May add, change and remove labels.
    label_admin: bool,
    policy: LabelPolicy,
    /// "Every label of the resource is one it sees", with and without test data: built once,
    /// since every predicate of every request carries one.
    every_label_allowed: [AccessPredicate; 2],
}

/// Whether an interaction reaches test data (`HTEST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestData {
    Included,
    Excluded,
}

impl Clearance {
    /// A caller's clearance: its own confidentiality ceiling and sensitivity grants, for a
    /// request made for `purpose`. Break the glass (`BTG`) widens both, up to the
    /// deployment's ceiling; the authorization server grants `BTG` only to users allowed it.
    pub fn new(
        confidentiality: Confidentiality,
        sensitivities: Sensitivities,
        purpose: &str,
        label_admin: bool,
        policy: LabelPolicy,
    ) -> Clearance {
        let (confidentiality, sensitivities) = if purpose == "BTG" {
            (confidentiality.max(policy.break_glass_ceiling), Sensitivities::All)
        } else {
            (confidentiality, sensitivities)
        };
        let mut c = Clearance {
            confidentiality,
            sensitivities,
            purpose: purpose.to_string(),
            label_admin,
            policy,
            every_label_allowed: [AccessPredicate::DenyAll, AccessPredicate::DenyAll],
        };
        c.every_label_allowed = [c.every_label_allowed(TestData::Included), c.every_label_allowed(TestData::Excluded)];
        c
    }

    pub fn confidentiality(&self) -> Confidentiality {
        self.confidentiality
    }

    pub fn label_admin(&self) -> bool {
        self.label_admin
    }

    fn every_label_allowed(&self, test_data: TestData) -> AccessPredicate {
        let allowed = self.allowed(test_data);
        if self.label_admin {
            // A label admin also sees labels nobody knows, to correct them: only the known
            // labels beyond its clearance hide a resource from it.
            let forbidden: Vec<TokenValue> =
                labels::known_classes().into_iter().filter(|c| !allowed.contains(c)).map(class).collect();
            AccessPredicate::Not(Box::new(AccessPredicate::Token {
                param: LABEL_CLASS_PARAM.into(),
                values: forbidden,
            }))
        } else {
            let allowed: Vec<TokenValue> = allowed.into_iter().map(class).collect();
            AccessPredicate::Not(Box::new(AccessPredicate::TokenOtherThan {
                param: LABEL_CLASS_PARAM.into(),
                values: allowed.into(),
            }))
        }
    }

    /// The strictest clearance: normal confidentiality, no sensitivity, treatment. What a
    /// caller gets until it is told otherwise.
    pub fn minimal() -> Clearance {
        Clearance::new(Confidentiality::N, Sensitivities::Only(Vec::new()), "TREAT", false, LabelPolicy::default())
    }

    pub fn policy(&self) -> &LabelPolicy {
        &self.policy
    }

    /// The confidentiality classes up to the clearance.
    fn confidentiality_classes(&self) -> Vec<String> {
        Confidentiality::ALL
            .into_iter()
            .filter(|c| *c <= self.confidentiality)
            .map(|c| format!("conf:{}", c.code()))
            .collect()
    }

    /// Every label class (see [`labels::class_key`]) the caller may see on a resource.
    fn allowed(&self, test_data: TestData) -> Vec<String> {
        let mut out = self.confidentiality_classes();
        out.extend(self.sensitivities.codes().into_iter().map(|c| format!("sens:{c}")));
        out.push("inert".into());
        out.extend(labels::purpose_and_ancestors(&self.purpose).into_iter().map(|c| format!("purpose:{c}")));
        if test_data == TestData::Included {
            out.push("test".into());
        }
        out
    }

    /// May the caller see one label (an inline label on an element, say)? The same rule as
    /// [`Clearance::predicate`] applies to a resource's labels.
    pub fn sees_label(&self, system: Option<&str>, code: &str) -> bool {
        let class = labels::class_key(system, code);
        self.allowed(TestData::Included).contains(&class) || (self.label_admin && class == "unknown")
    }

    /// The resources of `resource_type` (`None`: of any type) the caller's labels let it see.
    pub fn predicate(&self, resource_type: Option<&str>, test_data: TestData) -> AccessPredicate {
        let every_label_allowed = match test_data {
            TestData::Included => self.every_label_allowed[0].clone(),
            TestData::Excluded => self.every_label_allowed[1].clone(),
        };
        // A resource without a confidentiality label has its type's default; where that is
        // above the clearance, only resources labelled low enough are visible.
        let labelled_low_enough = || AccessPredicate::Token {
            param: LABEL_CLASS_PARAM.into(),
            values: self.confidentiality_classes().into_iter().map(class).collect(),
        };
        let above = |c: Confidentiality| c > self.confidentiality;
        let default_ok = match resource_type {
            Some(t) if above(self.policy.default_for(t)) => labelled_low_enough(),
            Some(_) => AccessPredicate::AllowAll,
            None => {
                let listed = |high: bool| -> Vec<String> {
                    self.policy
                        .confidentiality_by_type
                        .iter()
                        .filter(|(_, c)| above(**c) == high)
                        .map(|(t, _)| t.clone())
                        .collect()
                };
                if above(self.policy.default_confidentiality) {
                    // Only the types whose own default is low enough are visible unlabelled.
                    AccessPredicate::Any(vec![AccessPredicate::ResourceType(listed(false)), labelled_low_enough()])
                } else if listed(true).is_empty() {
                    AccessPredicate::AllowAll
                } else {
                    let high = AccessPredicate::ResourceType(listed(true));
                    AccessPredicate::Any(vec![AccessPredicate::Not(Box::new(high)), labelled_low_enough()])
                }
            }
        };
        AccessPredicate::All(vec![every_label_allowed, default_ok]).simplified()
    }
}

/// A label class as a token value (class rows carry no system).
fn class(code: String) -> TokenValue {
    TokenValue { system: SystemMatch::Any, code: Some(code) }
}

/// What has no test-data label: how a search without a caller's scope leaves test data out.
pub fn not_test_data() -> AccessPredicate {
    AccessPredicate::Not(Box::new(AccessPredicate::Token {
        param: "_security".into(),
        values: vec![value(ACT_CODE_SYSTEM, TEST_DATA), value(ACT_REASON_SYSTEM, TEST_DATA)],
    }))
}

fn value(system: &str, code: &str) -> TokenValue {
    TokenValue { system: SystemMatch::Is(system.into()), code: Some(code.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_fhir::labels::{CONFIDENTIALITY_SYSTEM, OBSERVATION_VALUE_SYSTEM};
    use bastion_search::AccessRow;
    use serde_json::{Value, json};

    fn resource(t: &str, labels: &[(Option<&str>, &str)]) -> Value {
        let security: Vec<Value> = labels
            .iter()
            .map(|(s, c)| match s {
                Some(s) => json!({"system": s, "code": c}),
                None => json!({"code": c}),
            })
            .collect();
        json!({"resourceType": t, "id": "x", "meta": {"security": security}})
    }

    fn sees(c: &Clearance, t: &str, labels: &[(Option<&str>, &str)], test_data: TestData) -> bool {
        let r = resource(t, labels);
        let row = AccessRow { resource_type: t, id: "x", compartments: &[], resource: Some(&r), referrers: &[] };
        c.predicate(Some(t), test_data).admits(&row) && c.predicate(None, test_data).admits(&row)
    }

    fn clearance(conf: Confidentiality, sens: &[&str], purpose: &str) -> Clearance {
        Clearance::new(conf, Sensitivities::from_grants(sens.iter().copied()), purpose, false, LabelPolicy::default())
    }

    const CONF: Option<&str> = Some(CONFIDENTIALITY_SYSTEM);
    const ACT: Option<&str> = Some(ACT_CODE_SYSTEM);
    const REASON: Option<&str> = Some(ACT_REASON_SYSTEM);

    #[test]
    fn confidentiality_up_to_the_clearance() {
        let n = clearance(Confidentiality::N, &[], "TREAT");
        for (code, visible) in [("U", true), ("L", true), ("M", true), ("N", true), ("R", false), ("V", false)] {
            assert_eq!(sees(&n, "Observation", &[(CONF, code)], TestData::Included), visible, "{code}");
        }
        let r = clearance(Confidentiality::R, &[], "TREAT");
        assert!(sees(&r, "Observation", &[(CONF, "R")], TestData::Included));
        assert!(!sees(&r, "Observation", &[(CONF, "V")], TestData::Included));
    }

    #[test]
    fn rejects_a_resource_with_a_second_higher_confidentiality() {
        let n = clearance(Confidentiality::N, &[], "TREAT");
        assert!(!sees(&n, "Observation", &[(CONF, "N"), (CONF, "R")], TestData::Included));
    }

    #[test]
    fn unlabelled_resources_have_their_types_default() {
        let mut policy = LabelPolicy::default();
        policy.confidentiality_by_type.insert("Consent".into(), Confidentiality::R);
        let n = Clearance::new(Confidentiality::N, Sensitivities::Only(vec![]), "TREAT", false, policy.clone());
        assert!(sees(&n, "Observation", &[], TestData::Included));
        assert!(!sees(&n, "Consent", &[], TestData::Included), "Consent defaults to R");
        assert!(sees(&n, "Consent", &[(CONF, "N")], TestData::Included), "an explicit label wins over the default");
        let l = Clearance::new(Confidentiality::L, Sensitivities::Only(vec![]), "TREAT", false, policy);
        assert!(!sees(&l, "Observation", &[], TestData::Included), "N by default is above L");
        assert!(sees(&l, "Observation", &[(CONF, "L")], TestData::Included));
        assert!(!sees(&l, "Observation", &[(ACT, "NORDSCLCD")], TestData::Included), "a caveat is no confidentiality");
    }

    #[test]
    fn sensitivity_only_for_roles_that_hold_it() {
        let none = clearance(Confidentiality::V, &[], "TREAT");
        let psy = clearance(Confidentiality::V, &["PSY"], "TREAT");
        let spi = clearance(Confidentiality::V, &["SPI"], "TREAT");
        let all = clearance(Confidentiality::V, &["*"], "TREAT");
        assert!(!sees(&none, "Observation", &[(ACT, "PSY")], TestData::Included));
        assert!(sees(&psy, "Observation", &[(ACT, "PSY")], TestData::Included));
        assert!(!sees(&psy, "Observation", &[(ACT, "PSY"), (ACT, "HIV")], TestData::Included), "every label counts");
        assert!(!sees(&psy, "Observation", &[(ACT, "SUD")], TestData::Included));
        assert!(sees(&spi, "Observation", &[(ACT, "SUD")], TestData::Included), "SPI holds its family");
        assert!(sees(&all, "Observation", &[(ACT, "HIV"), (ACT, "CEL")], TestData::Included));
        assert!(!sees(&psy, "Observation", &[(ACT, "CTCOMPT")], TestData::Included), "a compartment label too");
    }

    #[test]
    fn rejects_unknown_labels() {
        let everything = clearance(Confidentiality::V, &["*"], "TREAT");
        for label in [
            (None, "PSY"),
            (Some("http://example.org/labels"), "secret"),
            (ACT, "NORDSLCD"),
            (CONF, "PSY"),
            (CONF, "B"),
            (REASON, "NOT-A-PURPOSE"),
        ] {
            assert!(!sees(&everything, "Observation", &[label], TestData::Included), "{label:?}");
            assert!(
                !sees(&everything, "Observation", &[(CONF, "N"), label], TestData::Included),
                "{label:?} beside a known one"
            );
        }
    }

    #[test]
    fn label_admin_sees_unknown_labels_but_not_beyond_its_clearance() {
        let admin =
            Clearance::new(Confidentiality::R, Sensitivities::Only(vec!["PSY"]), "TREAT", true, LabelPolicy::default());
        assert!(sees(&admin, "Observation", &[(Some("http://example.org/labels"), "secret")], TestData::Included));
        assert!(sees(&admin, "Observation", &[(None, "PSY")], TestData::Included));
        assert!(sees(&admin, "Observation", &[(ACT, "PSY"), (CONF, "R")], TestData::Included));
        assert!(!sees(&admin, "Observation", &[(CONF, "V")], TestData::Included));
        assert!(!sees(&admin, "Observation", &[(ACT, "HIV")], TestData::Included));
        assert!(!sees(&admin, "Observation", &[(ACT, "HTEST")], TestData::Excluded));
    }

    #[test]
    fn handling_caveats_and_integrity_deny_nothing() {
        let n = clearance(Confidentiality::N, &[], "TREAT");
        for label in [
            (ACT, "NORDSCLCD"),
            (ACT, "42CFRPart2"),
            (ACT, "PROCESSINLINELABEL"),
            (Some(OBSERVATION_VALUE_SYSTEM), "CRYTOHASH"),
        ] {
            assert!(sees(&n, "Observation", &[label], TestData::Included), "{label:?}");
        }
    }

    #[test]
    fn data_for_a_purpose_serves_that_purpose_and_its_kinds() {
        let treat = clearance(Confidentiality::N, &[], "TREAT");
        let research = clearance(Confidentiality::N, &[], "CLINTRCH");
        assert!(sees(&treat, "Observation", &[(REASON, "TREAT")], TestData::Included));
        assert!(!sees(&treat, "Observation", &[(REASON, "HRESCH")], TestData::Included));
        assert!(sees(&research, "Observation", &[(REASON, "HRESCH")], TestData::Included), "CLINTRCH is-a HRESCH");
        assert!(!sees(&research, "Observation", &[(REASON, "TREAT")], TestData::Included));
    }

    #[test]
    fn test_data_only_where_included() {
        let n = clearance(Confidentiality::N, &[], "TREAT");
        for system in [ACT, REASON] {
            assert!(sees(&n, "Observation", &[(system, "HTEST")], TestData::Included));
            assert!(!sees(&n, "Observation", &[(system, "HTEST")], TestData::Excluded));
        }
        assert!(sees(&n, "Observation", &[], TestData::Excluded));
    }

    #[test]
    fn break_the_glass_reveals_sensitivities_up_to_the_ceiling() {
        let btg = clearance(Confidentiality::N, &[], "BTG");
        assert!(sees(&btg, "Observation", &[(ACT, "PSY"), (CONF, "R")], TestData::Included));
        assert!(!sees(&btg, "Observation", &[(CONF, "V")], TestData::Included), "not V unless configured");
        assert!(!sees(&btg, "Observation", &[(None, "PSY")], TestData::Included), "nor unknown labels");
        let policy = LabelPolicy { break_glass_ceiling: Confidentiality::V, ..LabelPolicy::default() };
        let btg_v = Clearance::new(Confidentiality::N, Sensitivities::Only(vec![]), "BTG", false, policy);
        assert!(sees(&btg_v, "Observation", &[(CONF, "V")], TestData::Included));
        assert!(sees(&btg, "Observation", &[(REASON, "TREAT")], TestData::Included), "BTG is-a TREAT");
    }

    #[test]
    fn a_type_wide_predicate_agrees_with_the_per_type_one() {
        let mut policy = LabelPolicy::default();
        policy.confidentiality_by_type.insert("Consent".into(), Confidentiality::R);
        policy.confidentiality_by_type.insert("ValueSet".into(), Confidentiality::U);
        for conf in Confidentiality::ALL {
            let c = Clearance::new(conf, Sensitivities::Only(vec![]), "TREAT", false, policy.clone());
            for t in ["Consent", "ValueSet", "Observation"] {
                for labels in [vec![], vec![(CONF, "L")], vec![(CONF, "R")]] {
                    let r = resource(t, &labels);
                    let row =
                        AccessRow { resource_type: t, id: "x", compartments: &[], resource: Some(&r), referrers: &[] };
                    assert_eq!(
                        c.predicate(Some(t), TestData::Included).admits(&row),
                        c.predicate(None, TestData::Included).admits(&row),
                        "{conf:?} {t} {labels:?}"
                    );
                }
            }
        }
    }
}
