//! Access decisions for Bastion, pure: no I/O, no clock, so that every rule is tested
//! exhaustively.
//!
//! What this is for: from a caller's permissions (the granted SMART scopes, already narrowed by
//! the client's and the user's ceilings), patient context, attributes and the deployment's
//! attribute [`Rule`]s, compile one [`AccessScope`] per token, which answers two questions:
//! - may this caller do this action on this resource type at all? ([`AccessScope::allows`];
//!   no means 403 `insufficient_scope`, decided before any data is touched);
//! - which stored resources of that type may it reach? ([`AccessScope::predicate`], an
//!   [`AccessPredicate`] the store compiles into the SQL of every read path and re-checks on
//!   every row).
//!
//! Security labels ([`labels`]) narrow every predicate but a create's: what a caller reads,
//! searches, changes or deletes must carry only labels its [`Clearance`] sees. What it is
//! not (yet): Consent, which narrows the same predicates and arrives with its issue.
//!
//! Rules, each failing closed:
//! - `patient/` permissions reach only the patient in context; without a patient context
//!   they reach nothing (never everything);
//! - `user/` and `system/` permissions reach every resource of their types (the user's roles
//!   already bound the grant), as narrowed by the rules;
//! - a granular filter (`patient/Observation.rs?category=laboratory`) narrows its permission
//!   to the resources matching it; only token parameters of the named type are enforceable
//!   filters, and a permission with any other filter grants nothing;
//! - a wildcard type never covers `AuditEvent`;
//! - for a type reached several ways, the reaches combine as a union;
//! - attribute rules then narrow that union: when allow rules apply to a type and action,
//!   only what one of them names stays; whatever an applicable deny rule names is removed,
//!   whatever any allow rule says.
#![forbid(unsafe_code)]

pub mod consent;
pub mod labelling;
pub mod labels;
pub mod redaction;
mod rules;

use bastion_search::{AccessPredicate, Clause, SearchQuery};

pub use labelling::{LabellingError, LabellingRule, LabellingSpec};
pub use labels::{Clearance, LabelPolicy, Sensitivities, TestData};
pub use rules::{Attributes, Condition, Effect, ORGANIZATION_TAG_SYSTEM, Rule, RuleError, RuleSpec};

/// What a request does to a resource type (SMART's `c r u d s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    /// read, vread, instance history
    Read,
    /// update, patch (and update-as-create)
    Update,
    Delete,
    /// type and system search, type and system history
    Search,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Create, Action::Read, Action::Update, Action::Delete, Action::Search];

    pub fn letter(self) -> char {
        match self {
            Action::Create => 'c',
            Action::Read => 'r',
            Action::Update => 'u',
            Action::Delete => 'd',
            Action::Search => 's',
        }
    }

    pub fn from_letter(c: char) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.letter() == c)
    }
}

/// Whose data a permission reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Patient,
    User,
    System,
}

/// One granted permission, as the policy sees a SMART resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub context: Context,
    /// `None`: every type but `AuditEvent`.
    pub resource_type: Option<String>,
    pub actions: Vec<Action>,
    /// Granular filter (`name=value` pairs, AND-ed), as the scope wrote it.
    pub filter: Vec<(String, String)>,
}

impl Permission {
    fn covers(&self, resource_type: &str, action: Action) -> bool {
        let type_ok = match &self.resource_type {
            None => resource_type != "AuditEvent",
            Some(t) => t == resource_type,
        };
        type_ok && self.actions.contains(&action)
    }

    fn covers_every_type(&self, action: Action) -> bool {
        self.resource_type.is_none() && self.actions.contains(&action) && self.filter.is_empty()
    }

    /// What the filter admits: `AllowAll` without one, `DenyAll` when it cannot be enforced
    /// (a wildcard type, a parameter that is not a token of the type, a value that does not
    /// parse). A filter that is not enforced must not widen access.
    fn filter_predicate(&self) -> AccessPredicate {
        if self.filter.is_empty() {
            return AccessPredicate::AllowAll;
        }
        let Some(t) = &self.resource_type else { return AccessPredicate::DenyAll };
        let Ok(query) = SearchQuery::parse(t, &self.filter) else { return AccessPredicate::DenyAll };
        if query.clauses.is_empty() || !query.sort.is_empty() {
            return AccessPredicate::DenyAll;
        }
        let mut all = Vec::new();
        for clause in query.clauses {
            match clause {
                Clause::Token { param, values } => all.push(AccessPredicate::Token { param, values }),
                _ => return AccessPredicate::DenyAll,
            }
        }
        AccessPredicate::All(all)
    }
}

/// What one caller may do, compiled once per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessScope {
    permissions: Vec<Permission>,
    /// Each permission's filter, compiled once.
    filters: Vec<AccessPredicate>,
    patient: Option<String>,
    attributes: Attributes,
    /// The deployment's rules that apply to this caller (by role and organization).
    rules: Vec<Rule>,
    /// What it may see of labelled data; `None` only in this crate's tests of the other rules.
    clearance: Option<Clearance>,
    /// What the patients' Consents leave it: `(reading, changing)`; `None` where none narrows.
    consent: Option<(AccessPredicate, AccessPredicate)>,
}

impl AccessScope {
    pub fn compile(permissions: Vec<Permission>, patient: Option<String>) -> AccessScope {
        let filters = permissions.iter().map(Permission::filter_predicate).collect();
        AccessScope {
            permissions,
            filters,
            patient: patient.filter(|p| !p.is_empty()),
            attributes: Attributes::default(),
            rules: Vec::new(),
            clearance: Some(Clearance::minimal()),
            consent: None,
        }
    }

    /// The same scope narrowed by what the patients' Consents leave the caller for reading
    /// (read, search, history) and for changing (update, patch, delete); see [`consent`].
    pub fn with_consent(&self, reading: AccessPredicate, changing: AccessPredicate) -> AccessScope {
        AccessScope { consent: Some((reading, changing)), ..self.clone() }
    }

    /// The same scope for a caller with this clearance (until then: [`Clearance::minimal`]).
    pub fn with_clearance(mut self, clearance: Clearance) -> AccessScope {
        self.clearance = Some(clearance);
        self
    }

    pub fn clearance(&self) -> &Clearance {
        static MINIMAL: std::sync::OnceLock<Clearance> = std::sync::OnceLock::new();
        self.clearance.as_ref().unwrap_or_else(|| MINIMAL.get_or_init(Clearance::minimal))
    }

    /// `reach` narrowed by the caller's labels and the patients' Consents, except for what a
    /// create brings in: the labels of new content are the labelling service's to decide, and
    /// a caller may write what it will not see again.
    fn labelled(
        &self,
        reach: AccessPredicate,
        resource_type: Option<&str>,
        action: Action,
        test: TestData,
    ) -> AccessPredicate {
        if action == Action::Create || reach == AccessPredicate::DenyAll {
            return reach;
        }
        let mut all = vec![reach];
        if let Some(c) = &self.clearance {
            all.push(c.predicate(resource_type, test));
        }
        if let Some((reading, changing)) = &self.consent {
            all.push(match action {
                Action::Read | Action::Search => reading.clone(),
                Action::Update | Action::Delete | Action::Create => changing.clone(),
            });
        }
        AccessPredicate::All(all).simplified()
    }

    /// The same scope, narrowed by the deployment's attribute rules for a caller with these
    /// attributes (rules for other roles or organizations are dropped here, once).
    pub fn with_rules(mut self, attributes: Attributes, rules: &[Rule]) -> AccessScope {
        self.rules = rules.iter().filter(|r| r.applies_to(&attributes)).cloned().collect();
        self.attributes = attributes;
        self
    }

    /// The caller's roles (`[[roles]]` names), for masking rules.
    pub fn roles(&self) -> &[String] {
        &self.attributes.roles
    }

    /// The organization the server stamps on what this caller creates.
    pub fn organization(&self) -> Option<&str> {
        self.attributes.organization.as_deref()
    }

    /// What a permission of `context` reaches before its filter. `resource_type` is `None`
    /// for an interaction across all types.
    fn base(&self, context: Context, resource_type: Option<&str>, action: Action) -> AccessPredicate {
        match (context, &self.patient) {
            (Context::User | Context::System, _) => AccessPredicate::AllowAll,
            // A type outside the Patient compartment (Practitioner, Organization, Location,
            // Medication, ...) is read where the patient's record refers to it; never written
            // (403), never found by a search across all types.
            (Context::Patient, Some(patient)) => match resource_type {
                Some(t) if outside_patient_compartment(t) => match action {
                    Action::Read | Action::Search => AccessPredicate::ReferencedFromCompartment(vec![patient.clone()]),
                    Action::Create | Action::Update | Action::Delete => AccessPredicate::DenyAll,
                },
                _ => AccessPredicate::PatientCompartment(vec![patient.clone()]),
            },
            (Context::Patient, None) => AccessPredicate::DenyAll,
        }
    }

    /// The union of what the covering permissions reach.
    fn granted(&self, resource_type: Option<&str>, action: Action) -> AccessPredicate {
        let covers = |p: &Permission| match resource_type {
            Some(t) => p.covers(t, action),
            None => p.covers_every_type(action),
        };
        let mut any = Vec::new();
        for (p, filter) in self.permissions.iter().zip(&self.filters).filter(|(p, _)| covers(p)) {
            any.push(AccessPredicate::All(vec![self.base(p.context, resource_type, action), filter.clone()]));
        }
        AccessPredicate::Any(any)
    }

    /// `granted`, narrowed by the rules that apply to (`resource_type`, `action`); `None`
    /// for an interaction across all types, where each rule speaks only about its own types.
    fn narrowed(&self, granted: AccessPredicate, resource_type: Option<&str>, action: Action) -> AccessPredicate {
        let applicable =
            |effect: Effect| self.rules.iter().filter(move |r| r.effect == effect && r.covers(resource_type, action));
        // What a rule names, restricted to its types when one predicate serves every type.
        let named = |r: &Rule| match resource_type {
            Some(_) => r.condition.predicate(&self.attributes),
            None => AccessPredicate::All(vec![r.types_predicate(), r.condition.predicate(&self.attributes)]),
        };
        let allows: Vec<&Rule> = applicable(Effect::Allow).collect();
        let denies: Vec<AccessPredicate> = applicable(Effect::Deny).map(named).collect();
        let mut all = vec![granted];
        if !allows.is_empty() {
            let mut any: Vec<AccessPredicate> = allows.iter().map(|r| named(r)).collect();
            if resource_type.is_none() {
                // Types no allow rule speaks about are not narrowed by them.
                let spoken = AccessPredicate::Any(allows.iter().map(|r| r.types_predicate()).collect());
                any.push(AccessPredicate::Not(Box::new(spoken)));
            }
            all.push(AccessPredicate::Any(any));
        }
        if !denies.is_empty() {
            all.push(AccessPredicate::Not(Box::new(AccessPredicate::Any(denies))));
        }
        AccessPredicate::All(all).simplified()
    }

    /// May the caller do `action` on `resource_type` at all?
    pub fn allows(&self, resource_type: &str, action: Action) -> bool {
        self.predicate(resource_type, action) != AccessPredicate::DenyAll
    }

    /// The resources of `resource_type` the caller may reach with `action`.
    pub fn predicate(&self, resource_type: &str, action: Action) -> AccessPredicate {
        self.labelled(self.write_reach(resource_type, action), Some(resource_type), action, TestData::Included)
    }

    /// What a search of `resource_type` matches: `predicate` for `Search`, with test data
    /// (`HTEST`) left out unless the search asks for it.
    pub fn search_predicate(&self, resource_type: &str, test_data: TestData) -> AccessPredicate {
        self.labelled(self.write_reach(resource_type, Action::Search), Some(resource_type), Action::Search, test_data)
    }

    /// Where new content written with `action` may lie: `predicate` before labels (a
    /// caller may write what its labels will then hide from it; the version it replaces
    /// must still be one it sees).
    pub fn write_reach(&self, resource_type: &str, action: Action) -> AccessPredicate {
        self.narrowed(self.granted(Some(resource_type), action), Some(resource_type), action)
    }

    /// For an interaction across all types (system search or history): only permissions on
    /// every type count, since one predicate must serve every type in the result.
    pub fn allows_every_type(&self, action: Action) -> bool {
        self.predicate_every_type(action) != AccessPredicate::DenyAll
    }

    pub fn predicate_every_type(&self, action: Action) -> AccessPredicate {
        self.labelled(self.narrowed(self.granted(None, action), None, action), None, action, TestData::Included)
    }

    /// `search_predicate` for a search across all types.
    pub fn search_predicate_every_type(&self, test_data: TestData) -> AccessPredicate {
        let reach = self.narrowed(self.granted(None, Action::Search), None, Action::Search);
        self.labelled(reach, None, Action::Search, test_data)
    }
}

/// Is `resource_type` outside the R4 Patient compartment (no resource of it is ever a member)?
fn outside_patient_compartment(resource_type: &str) -> bool {
    bastion_fhir::definitions::patient_compartment_params(resource_type).is_empty()
}

/// The R4 resource types of the "Anonymous" security category (security.html §6.1.0.2):
/// definitional content without individual or business data, which a deployment may make
/// readable without a token. No other type may be.
pub const ANONYMOUS_CATEGORY: &[&str] = &[
    "ActivityDefinition",
    "CapabilityStatement",
    "CodeSystem",
    "CompartmentDefinition",
    "ConceptMap",
    "DeviceDefinition",
    "DeviceMetric",
    "EventDefinition",
    "ExampleScenario",
    "GraphDefinition",
    "ImplementationGuide",
    "Library",
    "Measure",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "NamingSystem",
    "OperationDefinition",
    "SearchParameter",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "TerminologyCapabilities",
    "TestScript",
    "ValueSet",
];

impl AccessScope {
    /// A caller without a token where the deployment opened `types` (each of the Anonymous
    /// category) to anonymous reading: read and search on those, nothing else.
    pub fn anonymous_read(types: &[String]) -> Result<AccessScope, String> {
        let mut permissions = Vec::new();
        for t in types {
            if !ANONYMOUS_CATEGORY.contains(&t.as_str()) {
                return Err(format!(
                    "{t} is not of the Anonymous security category and cannot be read without a token"
                ));
            }
            permissions.push(Permission {
                context: Context::System,
                resource_type: Some(t.clone()),
                actions: vec![Action::Read, Action::Search],
                filter: Vec::new(),
            });
        }
        Ok(AccessScope::compile(permissions, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn perm(context: Context, t: Option<&str>, actions: &[Action]) -> Permission {
        Permission { context, resource_type: t.map(str::to_string), actions: actions.to_vec(), filter: Vec::new() }
    }

    /// A scope whose predicates leave labels out, so that these tests compare the rest.
    fn unlabelled(perms: Vec<Permission>, patient: Option<String>) -> AccessScope {
        AccessScope { clearance: None, ..AccessScope::compile(perms, patient) }
    }

    fn ann(perms: Vec<Permission>) -> AccessScope {
        unlabelled(perms, Some("ann".into()))
    }

    fn compartment(p: &str) -> AccessPredicate {
        AccessPredicate::PatientCompartment(vec![p.into()])
    }

    #[test]
    fn patient_scope_reaches_only_the_patient_in_context() {
        let s = ann(vec![perm(Context::Patient, None, &[Read, Search])]);
        assert!(s.allows("Observation", Read));
        assert_eq!(s.predicate("Observation", Search), compartment("ann"));
        assert_eq!(s.predicate("Patient", Read), compartment("ann"));
    }

    #[test]
    fn patient_scope_reads_types_outside_the_compartment_where_the_record_refers_to_them() {
        let s = ann(vec![perm(Context::Patient, None, &[Create, Read, Update, Search])]);
        for t in ["Practitioner", "Organization", "Medication", "Location"] {
            assert_eq!(s.predicate(t, Read), AccessPredicate::ReferencedFromCompartment(vec!["ann".into()]), "{t}");
            assert_eq!(s.predicate(t, Search), AccessPredicate::ReferencedFromCompartment(vec!["ann".into()]), "{t}");
            assert!(!s.allows(t, Create), "{t}: never written under a patient/ scope");
            assert!(!s.allows(t, Update), "{t}");
        }
        assert_eq!(s.predicate_every_type(Search), compartment("ann"), "not across all types");
    }

    #[test]
    fn patient_scope_without_patient_context_reaches_nothing() {
        let s = unlabelled(vec![perm(Context::Patient, None, &[Read, Search])], None);
        assert!(!s.allows("Observation", Read));
        assert_eq!(s.predicate("Observation", Read), AccessPredicate::DenyAll);
        let blank = unlabelled(vec![perm(Context::Patient, None, &[Read])], Some(String::new()));
        assert!(!blank.allows("Observation", Read), "a blank patient is no patient");
    }

    #[test]
    fn rejects_actions_not_granted() {
        let s = ann(vec![perm(Context::Patient, Some("Observation"), &[Read, Search])]);
        for a in [Create, Update, Delete] {
            assert!(!s.allows("Observation", a), "{a:?}");
        }
        assert!(!s.allows("Condition", Read), "another type");
    }

    #[test]
    fn user_and_system_scopes_reach_every_resource_of_their_types() {
        for ctx in [Context::User, Context::System] {
            let s = unlabelled(vec![perm(ctx, Some("Patient"), &[Read])], None);
            assert_eq!(s.predicate("Patient", Read), AccessPredicate::AllowAll);
            assert_eq!(s.predicate("Observation", Read), AccessPredicate::DenyAll);
        }
    }

    #[test]
    fn wider_reach_wins_per_type_only() {
        let s = ann(vec![
            perm(Context::Patient, None, &[Read, Search]),
            perm(Context::User, Some("Practitioner"), &[Read]),
        ]);
        assert_eq!(s.predicate("Practitioner", Read), AccessPredicate::AllowAll);
        assert_eq!(
            s.predicate("Observation", Read),
            compartment("ann"),
            "a user/ scope on one type widens only that type"
        );
    }

    #[test]
    fn wildcard_never_covers_audit_event() {
        let s = unlabelled(vec![perm(Context::System, None, &[Create, Read, Update, Delete, Search])], None);
        assert!(s.allows("Observation", Read));
        assert!(!s.allows("AuditEvent", Read));
        assert_eq!(s.predicate("AuditEvent", Search), AccessPredicate::DenyAll);
        let named = unlabelled(vec![perm(Context::System, Some("AuditEvent"), &[Read])], None);
        assert!(named.allows("AuditEvent", Read));
    }

    fn granular(t: Option<&str>, filter: &[(&str, &str)]) -> Permission {
        let mut p = perm(Context::Patient, t, &[Read, Search]);
        p.filter = filter.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        p
    }

    fn token(param: &str, system: Option<&str>, code: &str) -> AccessPredicate {
        use bastion_search::query::{SystemMatch, TokenValue};
        AccessPredicate::Token {
            param: param.into(),
            values: vec![TokenValue {
                system: system.map_or(SystemMatch::Any, |s| SystemMatch::Is(s.into())),
                code: Some(code.into()),
            }],
        }
    }

    const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

    #[test]
    fn granular_scope_narrows_to_its_token_filter_inside_the_compartment() {
        let s = ann(vec![granular(Some("Observation"), &[("category", &format!("{CATEGORY}|laboratory"))])]);
        assert!(s.allows("Observation", Search));
        assert_eq!(
            s.predicate("Observation", Search),
            AccessPredicate::All(vec![compartment("ann"), token("category", Some(CATEGORY), "laboratory")])
        );
    }

    #[test]
    fn granular_scopes_on_one_type_combine_as_a_union() {
        let s = ann(vec![
            granular(Some("Observation"), &[("category", "laboratory")]),
            granular(Some("Observation"), &[("category", "vital-signs")]),
        ]);
        assert_eq!(
            s.predicate("Observation", Read),
            AccessPredicate::Any(vec![
                AccessPredicate::All(vec![compartment("ann"), token("category", None, "laboratory")]),
                AccessPredicate::All(vec![compartment("ann"), token("category", None, "vital-signs")]),
            ])
        );
        let wide = ann(vec![
            granular(Some("Observation"), &[("category", "laboratory")]),
            perm(Context::Patient, Some("Observation"), &[Read]),
        ]);
        assert_eq!(
            wide.predicate("Observation", Read),
            compartment("ann"),
            "an unfiltered permission covers the filtered one"
        );
    }

    #[test]
    fn granular_scope_with_an_unenforceable_filter_grants_nothing() {
        for filter in [
            vec![("code:text", "glucose")], // not a plain token match
            vec![("date", "gt2020")],       // not a token parameter
            vec![("no-such-param", "x")],   // unknown
            vec![("category", "")],         // empty value
            vec![("_sort", "date")],        // not a filter
        ] {
            let s = ann(vec![granular(Some("Observation"), &filter)]);
            assert!(!s.allows("Observation", Search), "{filter:?}");
            assert_eq!(s.predicate("Observation", Read), AccessPredicate::DenyAll, "{filter:?}");
        }
        let wildcard = ann(vec![granular(None, &[("category", "laboratory")])]);
        assert!(!wildcard.allows("Observation", Search), "a filter on a wildcard type cannot be checked");
        assert!(!wildcard.allows_every_type(Search));
    }

    fn rule(effect: Effect, types: &[&str], condition: Condition) -> Rule {
        Rule {
            name: "r".into(),
            effect,
            roles: vec!["clinician".into()],
            organizations: Vec::new(),
            types: types.iter().map(|t| t.to_string()).collect(),
            actions: Vec::new(),
            condition,
        }
    }

    fn clinician(org: Option<&str>) -> Attributes {
        Attributes { roles: vec!["clinician".into()], organization: org.map(str::to_string) }
    }

    fn same_org() -> Condition {
        Condition { same_organization: true, ..Condition::default() }
    }

    fn org_tag(org: &str) -> AccessPredicate {
        token("_tag", Some(ORGANIZATION_TAG_SYSTEM), org)
    }

    fn user_all() -> AccessScope {
        unlabelled(vec![perm(Context::User, None, &[Create, Read, Update, Delete, Search])], None)
    }

    #[test]
    fn allow_rule_narrows_its_types_to_what_it_names() {
        let s = user_all()
            .with_rules(clinician(Some("Organization/x")), &[rule(Effect::Allow, &["Observation"], same_org())]);
        assert_eq!(s.predicate("Observation", Read), org_tag("Organization/x"));
        assert_eq!(s.predicate("Patient", Read), AccessPredicate::AllowAll, "other types are not narrowed");
        assert_eq!(s.organization(), Some("Organization/x"));
    }

    #[test]
    fn same_organization_rule_matches_nothing_for_a_caller_without_one() {
        let s = user_all().with_rules(clinician(None), &[rule(Effect::Allow, &["Observation"], same_org())]);
        assert!(!s.allows("Observation", Read));
    }

    #[test]
    fn rules_for_other_roles_or_organizations_do_not_apply() {
        let mut r = rule(Effect::Deny, &[], Condition::default());
        r.roles = vec!["researcher".into()];
        let s = user_all().with_rules(clinician(Some("Organization/x")), &[r.clone()]);
        assert_eq!(s.predicate("Observation", Read), AccessPredicate::AllowAll);
        r.roles = Vec::new();
        r.organizations = vec!["Organization/y".into()];
        let s = user_all().with_rules(clinician(Some("Organization/x")), &[r]);
        assert_eq!(s.predicate("Observation", Read), AccessPredicate::AllowAll);
    }

    #[test]
    fn deny_rule_beats_allow_rule() {
        let psy = Condition {
            security: vec![bastion_search::query::TokenValue {
                system: bastion_search::query::SystemMatch::Is(
                    "http://terminology.hl7.org/CodeSystem/v3-ActCode".into(),
                ),
                code: Some("PSY".into()),
            }],
            ..Condition::default()
        };
        let s = user_all().with_rules(
            clinician(Some("Organization/x")),
            &[rule(Effect::Allow, &["Observation"], same_org()), rule(Effect::Deny, &["Observation"], psy)],
        );
        let AccessPredicate::All(parts) = s.predicate("Observation", Read) else { panic!("not narrowed") };
        assert_eq!(parts[0], org_tag("Organization/x"));
        assert!(matches!(&parts[1], AccessPredicate::Not(_)), "{parts:?}");
    }

    #[test]
    fn deny_rule_without_condition_refuses_the_interaction() {
        let mut r = rule(Effect::Deny, &["Observation"], Condition::default());
        r.actions = vec![Delete];
        let s = user_all().with_rules(clinician(None), &[r]);
        assert!(!s.allows("Observation", Delete));
        assert!(s.allows("Observation", Update));
    }

    #[test]
    fn rules_never_widen_what_scopes_grant() {
        let s = ann(vec![perm(Context::Patient, Some("Observation"), &[Read])])
            .with_rules(clinician(Some("Organization/x")), &[rule(Effect::Allow, &[], same_org())]);
        assert!(!s.allows("Condition", Read));
        assert_eq!(
            s.predicate("Observation", Read),
            AccessPredicate::All(vec![compartment("ann"), org_tag("Organization/x")])
        );
    }

    #[test]
    fn system_wide_predicate_applies_each_rule_to_its_own_types() {
        let s = user_all()
            .with_rules(clinician(Some("Organization/x")), &[rule(Effect::Allow, &["Observation"], same_org())]);
        let p = s.predicate_every_type(Search);
        let row = |t: &str, tagged: bool| {
            let mut r = serde_json::json!({"resourceType": t, "id": "1"});
            if tagged {
                r["meta"] = serde_json::json!({"tag": [{"system": ORGANIZATION_TAG_SYSTEM, "code": "Organization/x"}]});
            }
            r
        };
        let admits = |r: &serde_json::Value| {
            p.admits(&bastion_search::AccessRow {
                resource_type: r["resourceType"].as_str().unwrap(),
                id: "1",
                compartments: &[],
                resource: Some(r),
                referrers: &[],
            })
        };
        assert!(admits(&row("Observation", true)));
        assert!(!admits(&row("Observation", false)), "an Observation of another organization");
        assert!(admits(&row("Patient", false)), "a type the rule does not speak about");
    }

    #[test]
    fn configured_rules_are_checked_at_start() {
        let ok = RuleSpec {
            name: "own".into(),
            effect: "allow".into(),
            roles: vec!["clinician".into()],
            actions: Some("rs".into()),
            organization: Some("same".into()),
            security: vec!["http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY".into()],
            patients: vec!["Patient/p1".into()],
            ..RuleSpec::default()
        };
        let r = Rule::from_spec(ok.clone()).unwrap();
        assert_eq!(r.actions, vec![Read, Search]);
        assert_eq!(r.condition.patients, vec!["p1".to_string()]);
        let bad = [
            RuleSpec { effect: "permit".into(), ..ok.clone() },
            RuleSpec { actions: Some("rx".into()), ..ok.clone() },
            RuleSpec { actions: Some(String::new()), ..ok.clone() },
            RuleSpec { organization: Some("Organization/x".into()), ..ok.clone() },
            RuleSpec { security: vec!["PSY".into()], ..ok.clone() },
            RuleSpec { patients: vec!["p1".into()], ..ok.clone() },
            RuleSpec { organizations: vec!["general-hospital".into()], ..ok.clone() },
        ];
        for spec in bad {
            assert!(Rule::from_spec(spec.clone()).is_err(), "{spec:?}");
        }
    }

    #[test]
    fn system_wide_interactions_need_a_permission_on_every_type() {
        let named = unlabelled(vec![perm(Context::System, Some("Patient"), &[Search])], None);
        assert!(!named.allows_every_type(Search));
        let any = ann(vec![perm(Context::Patient, None, &[Search])]);
        assert!(any.allows_every_type(Search));
        assert_eq!(any.predicate_every_type(Search), compartment("ann"));
    }

    #[test]
    fn anonymous_read_opens_only_reading_of_the_listed_types() {
        let s = AccessScope::anonymous_read(&["ValueSet".into()]).unwrap();
        assert!(s.allows("ValueSet", Read) && s.allows("ValueSet", Search));
        assert!(!s.allows("ValueSet", Create) && !s.allows("ValueSet", Update) && !s.allows("ValueSet", Delete));
        assert!(!s.allows("CodeSystem", Read), "only what is listed");
    }

    #[test]
    fn anonymous_read_refuses_types_outside_the_anonymous_category() {
        for t in ["Patient", "Observation", "Practitioner", "Organization", "AuditEvent"] {
            assert!(AccessScope::anonymous_read(&[t.to_string()]).is_err(), "{t}");
        }
    }

    #[test]
    fn no_permissions_allow_nothing() {
        let s = unlabelled(Vec::new(), Some("ann".into()));
        for a in [Create, Read, Update, Delete, Search] {
            assert!(!s.allows("Patient", a));
            assert!(!s.allows_every_type(a));
        }
    }
}
