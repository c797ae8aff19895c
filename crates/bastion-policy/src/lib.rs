//! Access decisions for Bastion, pure: no I/O, no clock, so that every rule is tested
//! exhaustively.
//!
//! What this is for: from a caller's permissions (the granted SMART scopes, already narrowed by
//! the client's and the user's ceilings) and patient context, compile one [`AccessScope`] per
//! request, which answers two questions:
//! - may this caller do this action on this resource type at all? ([`AccessScope::allows`];
//!   no means 403 `insufficient_scope`, decided before any data is touched);
//! - which stored resources of that type may it reach? ([`AccessScope::predicate`], an
//!   [`AccessPredicate`] the store compiles into the SQL of every read path and re-checks on
//!   every row).
//!
//! What it is not (yet): roles and attribute rules beyond the token's scopes, labels, Consent,
//! purpose of use. Those narrow the same predicates and arrive with their issues.
//!
//! Rules, each failing closed:
//! - `patient/` permissions reach only the patient in context; without a patient context
//!   they reach nothing (never everything);
//! - `user/` and `system/` permissions reach every resource of their types (the user's roles
//!   already bound the grant);
//! - a permission with a granular filter (`?category=...`) grants nothing until filters are
//!   compiled into predicates: a filter that is not enforced must not widen access;
//! - a wildcard type never covers `AuditEvent`;
//! - for a type reached both ways, the wider reach wins (scopes combine as a union).
#![forbid(unsafe_code)]

use bastion_search::AccessPredicate;

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
    pub fn letter(self) -> char {
        match self {
            Action::Create => 'c',
            Action::Read => 'r',
            Action::Update => 'u',
            Action::Delete => 'd',
            Action::Search => 's',
        }
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
    /// Granular filter (`name=value` pairs); not enforced yet, so such a permission grants nothing.
    pub filter: Vec<(String, String)>,
}

impl Permission {
    fn covers(&self, resource_type: &str, action: Action) -> bool {
        let type_ok = match &self.resource_type {
            None => resource_type != "AuditEvent",
            Some(t) => t == resource_type,
        };
        type_ok && self.actions.contains(&action) && self.filter.is_empty()
    }

    fn covers_every_type(&self, action: Action) -> bool {
        self.resource_type.is_none() && self.actions.contains(&action) && self.filter.is_empty()
    }
}

/// How far a caller reaches into one type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    Nothing,
    Compartment(String),
    Everything,
}

/// What one caller may do, compiled once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessScope {
    permissions: Vec<Permission>,
    patient: Option<String>,
}

impl AccessScope {
    pub fn compile(permissions: Vec<Permission>, patient: Option<String>) -> AccessScope {
        AccessScope { permissions, patient: patient.filter(|p| !p.is_empty()) }
    }

    fn reach(&self, covers: impl Fn(&Permission) -> bool) -> Reach {
        let mut reach = Reach::Nothing;
        for p in self.permissions.iter().filter(|p| covers(p)) {
            match (p.context, &self.patient) {
                (Context::User | Context::System, _) => return Reach::Everything,
                (Context::Patient, Some(patient)) => reach = Reach::Compartment(patient.clone()),
                (Context::Patient, None) => {}
            }
        }
        reach
    }

    fn predicate_of(reach: Reach) -> AccessPredicate {
        match reach {
            Reach::Nothing => AccessPredicate::DenyAll,
            Reach::Compartment(p) => AccessPredicate::PatientCompartment(vec![p]),
            Reach::Everything => AccessPredicate::AllowAll,
        }
    }

    /// May the caller do `action` on `resource_type` at all?
    pub fn allows(&self, resource_type: &str, action: Action) -> bool {
        self.reach(|p| p.covers(resource_type, action)) != Reach::Nothing
    }

    /// The resources of `resource_type` the caller may reach with `action`.
    pub fn predicate(&self, resource_type: &str, action: Action) -> AccessPredicate {
        Self::predicate_of(self.reach(|p| p.covers(resource_type, action)))
    }

    /// For an interaction across all types (system search or history): only permissions on
    /// every type count, since one predicate must serve every type in the result.
    pub fn allows_every_type(&self, action: Action) -> bool {
        self.reach(|p| p.covers_every_type(action)) != Reach::Nothing
    }

    pub fn predicate_every_type(&self, action: Action) -> AccessPredicate {
        Self::predicate_of(self.reach(|p| p.covers_every_type(action)))
    }
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

    fn ann(perms: Vec<Permission>) -> AccessScope {
        AccessScope::compile(perms, Some("ann".into()))
    }

    fn compartment(p: &str) -> AccessPredicate {
        AccessPredicate::PatientCompartment(vec![p.into()])
    }

    #[test]
    fn patient_scope_reaches_only_the_patient_in_context() {
        let s = ann(vec![perm(Context::Patient, None, &[Read, Search])]);
        assert!(s.allows("Observation", Read));
        assert_eq!(s.predicate("Observation", Search), compartment("ann"));
        assert_eq!(s.predicate("Practitioner", Read), compartment("ann"), "non-compartment types: only what is in it");
    }

    #[test]
    fn patient_scope_without_patient_context_reaches_nothing() {
        let s = AccessScope::compile(vec![perm(Context::Patient, None, &[Read, Search])], None);
        assert!(!s.allows("Observation", Read));
        assert_eq!(s.predicate("Observation", Read), AccessPredicate::DenyAll);
        let blank = AccessScope::compile(vec![perm(Context::Patient, None, &[Read])], Some(String::new()));
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
            let s = AccessScope::compile(vec![perm(ctx, Some("Patient"), &[Read])], None);
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
        let s = AccessScope::compile(vec![perm(Context::System, None, &[Create, Read, Update, Delete, Search])], None);
        assert!(s.allows("Observation", Read));
        assert!(!s.allows("AuditEvent", Read));
        assert_eq!(s.predicate("AuditEvent", Search), AccessPredicate::DenyAll);
        let named = AccessScope::compile(vec![perm(Context::System, Some("AuditEvent"), &[Read])], None);
        assert!(named.allows("AuditEvent", Read));
    }

    #[test]
    fn granular_scope_grants_nothing_until_filters_are_enforced() {
        let mut p = perm(Context::Patient, Some("Observation"), &[Read, Search]);
        p.filter = vec![("category".into(), "laboratory".into())];
        let s = ann(vec![p]);
        assert!(!s.allows("Observation", Search));
        assert_eq!(s.predicate("Observation", Search), AccessPredicate::DenyAll);
    }

    #[test]
    fn system_wide_interactions_need_a_permission_on_every_type() {
        let named = AccessScope::compile(vec![perm(Context::System, Some("Patient"), &[Search])], None);
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
        let s = AccessScope::compile(Vec::new(), Some("ann".into()));
        for a in [Create, Read, Update, Delete, Search] {
            assert!(!s.allows("Patient", a));
            assert!(!s.allows_every_type(a));
        }
    }
}
