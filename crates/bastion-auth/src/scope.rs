//! SMART scopes: one parser for v1 (`patient/Observation.read`) and v2
//! (`patient/Observation.rs?category=laboratory`), and the grant rule.
//!
//! What this is for: turning a `scope` string into typed [`Scope`]s, rendering a grant back in
//! the form it was asked for, and computing a grant as the intersection of what was requested
//! with every ceiling that applies (the client's registered scopes, the union of the user's role
//! permissions). What it is not: enforcement. Turning a grant into query predicates is the
//! policy layer's job.
//!
//! Rules that keep a malformed scope from widening access:
//! - a scope that does not parse is dropped and reported, never guessed at;
//! - v2 permission letters must be a non-empty subsequence of `cruds`, in that order;
//! - a wildcard type (`*`) never covers `AuditEvent` (it must be granted by name);
//! - a ceiling with a granular filter covers only requests with the same filter.

use std::fmt;

use thiserror::Error;

/// Why one scope token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScopeError {
    #[error("scope '{0}' is not a SMART scope")]
    Unrecognized(String),
    #[error("scope '{0}' names no resource type this server knows")]
    UnknownResourceType(String),
    #[error("scope '{0}' has permissions that are not a subsequence of 'cruds' (or read, write, *)")]
    BadPermissions(String),
    #[error("scope '{0}' has a malformed search filter")]
    BadFilter(String),
}

/// Whose data a resource scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeContext {
    /// The patient in context (`patient/`).
    Patient,
    /// Whatever the user may see (`user/`).
    User,
    /// A backend client without a user (`system/`).
    System,
}

impl ScopeContext {
    fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// The `cruds` permissions of a resource scope, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Perms(u8);

impl Perms {
    pub const CREATE: Perms = Perms(1);
    pub const READ: Perms = Perms(2);
    pub const UPDATE: Perms = Perms(4);
    pub const DELETE: Perms = Perms(8);
    pub const SEARCH: Perms = Perms(16);
    pub const NONE: Perms = Perms(0);
    pub const ALL: Perms = Perms(31);
    /// SMART v1 `read`: read and search.
    pub const V1_READ: Perms = Perms(2 | 16);
    /// SMART v1 `write`: create, update and delete.
    pub const V1_WRITE: Perms = Perms(1 | 4 | 8);

    const LETTERS: [(char, Perms); 5] =
        [('c', Perms::CREATE), ('r', Perms::READ), ('u', Perms::UPDATE), ('d', Perms::DELETE), ('s', Perms::SEARCH)];

    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    pub fn intersection(self, other: Perms) -> Perms {
        Perms(self.0 & other.0)
    }

    /// `cruds` letters, in order: `rs`, `cud`. `None` unless a non-empty, ordered, repeat-free
    /// subsequence of `cruds`.
    pub fn parse_v2(letters: &str) -> Option<Perms> {
        let mut perms = Perms::NONE;
        let mut next = 0;
        for c in letters.chars() {
            let at = Self::LETTERS[next..].iter().position(|(l, _)| *l == c)? + next;
            perms = perms.union(Self::LETTERS[at].1);
            next = at + 1;
        }
        (!perms.is_empty()).then_some(perms)
    }

    /// The v2 letters (`rs`).
    pub fn letters(self) -> String {
        Self::LETTERS.iter().filter(|(_, p)| self.contains(*p)).map(|(l, _)| *l).collect()
    }
}

/// The resource type a scope names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TypeSel {
    /// `*`: every type except `AuditEvent`.
    Any,
    Named(String),
}

impl TypeSel {
    /// Does a scope on `self` cover a request for `other`?
    pub fn covers(&self, other: &TypeSel) -> bool {
        match (self, other) {
            (TypeSel::Any, TypeSel::Named(t)) => t != "AuditEvent",
            (TypeSel::Any, TypeSel::Any) => true,
            (TypeSel::Named(a), TypeSel::Named(b)) => a == b,
            (TypeSel::Named(_), TypeSel::Any) => false,
        }
    }

    /// Does it cover resources of this type?
    pub fn matches(&self, resource_type: &str) -> bool {
        self.covers(&TypeSel::Named(resource_type.to_string()))
    }
}

/// How a resource scope was written, so a grant is rendered the way it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Syntax {
    V1,
    V2,
}

/// `context/Type.perms[?filter]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceScope {
    pub context: ScopeContext,
    pub resource_type: TypeSel,
    pub perms: Perms,
    /// Granular filter (`?category=http://...|laboratory`): search parameters, sorted by name,
    /// that every resource the scope reaches must match.
    pub filter: Vec<(String, String)>,
    pub syntax: Syntax,
}

impl ResourceScope {
    /// Does this scope (as a ceiling) allow `requested`, and with which permissions?
    fn allows(&self, requested: &ResourceScope) -> Perms {
        let filter_ok = self.filter.is_empty() || self.filter == requested.filter;
        if self.context == requested.context && self.resource_type.covers(&requested.resource_type) && filter_ok {
            self.perms.intersection(requested.perms)
        } else {
            Perms::NONE
        }
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match &self.resource_type {
            TypeSel::Any => "*",
            TypeSel::Named(t) => t,
        };
        let perms = match (self.syntax, self.perms) {
            (Syntax::V1, Perms::ALL) => "*".to_string(),
            (Syntax::V1, Perms::V1_READ) => "read".to_string(),
            (Syntax::V1, Perms::V1_WRITE) => "write".to_string(),
            (_, p) => p.letters(),
        };
        write!(f, "{}/{t}.{perms}", self.context.as_str())?;
        for (i, (k, v)) in self.filter.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

/// One accepted scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Resource(ResourceScope),
    /// `launch`: the EHR launch context.
    Launch,
    LaunchPatient,
    LaunchEncounter,
    OpenId,
    FhirUser,
    /// `profile` (SMART v1's OpenID identity scope).
    Profile,
    OfflineAccess,
    OnlineAccess,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => r.fmt(f),
            Scope::Launch => f.write_str("launch"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::LaunchEncounter => f.write_str("launch/encounter"),
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::Profile => f.write_str("profile"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
        }
    }
}

impl Scope {
    /// Parses one scope token.
    pub fn parse(token: &str) -> Result<Scope, ScopeError> {
        let simple = match token {
            "launch" => Some(Scope::Launch),
            "launch/patient" => Some(Scope::LaunchPatient),
            "launch/encounter" => Some(Scope::LaunchEncounter),
            "openid" => Some(Scope::OpenId),
            "fhirUser" => Some(Scope::FhirUser),
            "profile" => Some(Scope::Profile),
            "offline_access" => Some(Scope::OfflineAccess),
            "online_access" => Some(Scope::OnlineAccess),
            _ => None,
        };
        if let Some(s) = simple {
            return Ok(s);
        }
        let unrecognized = || ScopeError::Unrecognized(token.to_string());
        let (context, rest) = token.split_once('/').ok_or_else(unrecognized)?;
        let context = match context {
            "patient" => ScopeContext::Patient,
            "user" => ScopeContext::User,
            "system" => ScopeContext::System,
            _ => return Err(unrecognized()),
        };
        let (body, filter) = match rest.split_once('?') {
            Some((b, f)) => (b, Some(f)),
            None => (rest, None),
        };
        let (rtype, perms) = body.split_once('.').ok_or_else(unrecognized)?;
        let resource_type = match rtype {
            "*" => TypeSel::Any,
            t if bastion_fhir::definitions::is_resource_type(t) => TypeSel::Named(t.to_string()),
            _ => return Err(ScopeError::UnknownResourceType(token.to_string())),
        };
        let bad_perms = || ScopeError::BadPermissions(token.to_string());
        let (perms, syntax) = match perms {
            "read" => (Perms::V1_READ, Syntax::V1),
            "write" => (Perms::V1_WRITE, Syntax::V1),
            "*" => (Perms::ALL, Syntax::V1),
            letters => (Perms::parse_v2(letters).ok_or_else(bad_perms)?, Syntax::V2),
        };
        let filter = match filter {
            None => Vec::new(),
            // SMART v1 has no filters.
            Some(_) if syntax == Syntax::V1 => return Err(ScopeError::BadFilter(token.to_string())),
            Some(f) => parse_filter(f).ok_or_else(|| ScopeError::BadFilter(token.to_string()))?,
        };
        Ok(Scope::Resource(ResourceScope { context, resource_type, perms, filter, syntax }))
    }
}

/// `a=b&c=d` with non-empty names and values, sorted by name (so that equal filters compare
/// equal however they were written).
fn parse_filter(f: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in f.split('&') {
        let (k, v) = pair.split_once('=')?;
        let name_ok =
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
        if !name_ok || v.is_empty() {
            return None;
        }
        out.push((k.to_string(), v.to_string()));
    }
    out.sort();
    (!out.is_empty()).then_some(out)
}

/// The scopes of a request or a grant, in the order first given, without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet {
    scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parses a space-separated `scope` string: the scopes that parse, and why the others did
    /// not (they are dropped, so a typo narrows a grant but never widens it).
    pub fn parse(s: &str) -> (ScopeSet, Vec<ScopeError>) {
        let mut set = ScopeSet::default();
        let mut errors = Vec::new();
        for token in s.split([' ', '\t', '\n']).filter(|t| !t.is_empty()) {
            match Scope::parse(token) {
                Ok(scope) => set.insert(scope),
                Err(e) => errors.push(e),
            }
        }
        (set, errors)
    }

    pub fn insert(&mut self, scope: Scope) {
        if !self.scopes.contains(&scope) {
            self.scopes.push(scope);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter()
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.scopes.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    pub fn resource_scopes(&self) -> impl Iterator<Item = &ResourceScope> {
        self.scopes.iter().filter_map(|s| match s {
            Scope::Resource(r) => Some(r),
            _ => None,
        })
    }

    /// The union of several sets (a user's roles).
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a ScopeSet>) -> ScopeSet {
        let mut out = ScopeSet::default();
        for s in sets {
            for scope in &s.scopes {
                out.insert(scope.clone());
            }
        }
        out
    }

    /// The permissions this set gives for `requested`: the union over its scopes.
    fn allows(&self, requested: &ResourceScope) -> Perms {
        self.resource_scopes().fold(Perms::NONE, |p, c| p.union(c.allows(requested)))
    }

    /// The grant: each requested scope narrowed to what every ceiling allows (requested ∩
    /// client ∩ roles ...), dropped when nothing is left. A requested wildcard type under a
    /// ceiling that names types is narrowed to those types. Non-resource scopes (`openid`,
    /// `launch/patient`, ...) are kept when every ceiling that lists any non-resource scope
    /// holds them too; `resource_only` ceilings (role permissions) do not limit them.
    pub fn grant(requested: &ScopeSet, ceilings: &[Ceiling<'_>]) -> ScopeSet {
        let mut out = ScopeSet::default();
        for scope in &requested.scopes {
            match scope {
                Scope::Resource(r) => {
                    for narrowed in narrow(r, ceilings) {
                        out.insert(Scope::Resource(narrowed));
                    }
                }
                other => {
                    if ceilings.iter().all(|c| c.resource_only || c.scopes.contains(other)) {
                        out.insert(other.clone());
                    }
                }
            }
        }
        out
    }
}

/// Category sub-scopes offered on the consent page for a resource-level scope: the user may
/// grant `patient/Observation.rs?category=...|laboratory` instead of all Observations (the
/// categories ONC's HTI-1 rule names for Observation and Condition). Only the read and search
/// permissions are offered; nothing for other types, filtered scopes or wildcards.
pub fn category_sub_scopes(scope: &ResourceScope) -> Vec<ResourceScope> {
    const OBSERVATION: &[(&str, &str)] = &[
        ("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory"),
        ("http://terminology.hl7.org/CodeSystem/observation-category", "social-history"),
        ("http://terminology.hl7.org/CodeSystem/observation-category", "survey"),
        ("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs"),
        ("http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "clinical-test"),
        ("http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "sdoh"),
    ];
    const CONDITION: &[(&str, &str)] = &[
        ("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis"),
        ("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item"),
        ("http://hl7.org/fhir/us/core/CodeSystem/condition-category", "health-concern"),
    ];
    let categories = match &scope.resource_type {
        TypeSel::Named(t) if t == "Observation" => OBSERVATION,
        TypeSel::Named(t) if t == "Condition" => CONDITION,
        _ => return Vec::new(),
    };
    let perms = scope.perms.intersection(Perms::READ.union(Perms::SEARCH));
    if !scope.filter.is_empty() || perms.is_empty() {
        return Vec::new();
    }
    categories
        .iter()
        .map(|(system, code)| ResourceScope {
            perms,
            filter: vec![("category".to_string(), format!("{system}|{code}"))],
            syntax: Syntax::V2,
            ..scope.clone()
        })
        .collect()
}

/// One limit a grant must stay under.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling<'a> {
    pub scopes: &'a ScopeSet,
    /// Limits resource scopes only (a user's role permissions).
    pub resource_only: bool,
}

/// `requested` under every ceiling: the scope itself with fewer permissions, or (for a
/// wildcard type under named-type ceilings) one scope per type that every ceiling allows.
fn narrow(requested: &ResourceScope, ceilings: &[Ceiling<'_>]) -> Vec<ResourceScope> {
    let perms_under_all = |r: &ResourceScope| ceilings.iter().fold(r.perms, |p, c| p.intersection(c.scopes.allows(r)));
    let whole = perms_under_all(requested);
    let mut out = Vec::new();
    if !whole.is_empty() {
        out.push(ResourceScope { perms: whole, ..requested.clone() });
    }
    if requested.resource_type == TypeSel::Any {
        // Types the ceilings name, each tried as a narrower request.
        let mut named: Vec<String> = ceilings
            .iter()
            .flat_map(|c| c.scopes.resource_scopes())
            .filter_map(|c| match &c.resource_type {
                TypeSel::Named(t) if c.context == requested.context => Some(t.clone()),
                _ => None,
            })
            .collect();
        named.sort();
        named.dedup();
        for t in named {
            let candidate = ResourceScope { resource_type: TypeSel::Named(t), ..requested.clone() };
            let perms = perms_under_all(&candidate);
            // Only what the wildcard grant does not already give.
            if !perms.is_empty() && !whole.contains(perms) {
                out.push(ResourceScope { perms, ..candidate });
            }
        }
    }
    out
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.scopes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            s.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(s: &str) -> ResourceScope {
        match Scope::parse(s).unwrap() {
            Scope::Resource(r) => r,
            _ => panic!("{s}"),
        }
    }

    #[test]
    fn offers_category_sub_scopes_for_observation_and_condition() {
        let obs = category_sub_scopes(&resource("patient/Observation.rs"));
        assert_eq!(obs.len(), 6);
        assert!(
            obs.iter().any(|s| s.to_string()
                == "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory")
        );
        let cond = category_sub_scopes(&resource("user/Condition.read"));
        assert_eq!(cond.len(), 3);
        assert!(cond.iter().all(|s| s.syntax == Syntax::V2 && s.perms == Perms::READ.union(Perms::SEARCH)));
    }

    #[test]
    fn offers_no_sub_scopes_for_other_types_wildcards_filters_or_writes() {
        for s in
            ["patient/Patient.rs", "patient/*.rs", "patient/Observation.rs?category=a|b", "patient/Observation.cud"]
        {
            assert!(category_sub_scopes(&resource(s)).is_empty(), "{s}");
        }
    }

    #[test]
    fn sub_scopes_keep_only_read_and_search() {
        let subs = category_sub_scopes(&resource("patient/Observation.cruds"));
        assert!(subs.iter().all(|s| s.perms == Perms::READ.union(Perms::SEARCH)));
    }

    fn set(s: &str) -> ScopeSet {
        let (set, errors) = ScopeSet::parse(s);
        assert!(errors.is_empty(), "{errors:?}");
        set
    }

    fn rs(s: &str) -> ResourceScope {
        match Scope::parse(s).unwrap() {
            Scope::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn client(s: &ScopeSet) -> Ceiling<'_> {
        Ceiling { scopes: s, resource_only: false }
    }

    fn roles(s: &ScopeSet) -> Ceiling<'_> {
        Ceiling { scopes: s, resource_only: true }
    }

    #[test]
    fn v2_permissions_are_ordered_subsequences_of_cruds() {
        assert_eq!(Perms::parse_v2("rs"), Some(Perms::V1_READ));
        assert_eq!(Perms::parse_v2("cruds"), Some(Perms::ALL));
        assert_eq!(Perms::parse_v2("cud"), Some(Perms::V1_WRITE));
        assert_eq!(Perms::parse_v2("d"), Some(Perms::DELETE));
        for bad in ["", "sr", "rr", "x", "crudsx", "rS", "cruds "] {
            assert_eq!(Perms::parse_v2(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn v1_scopes_map_onto_v2_permissions() {
        assert_eq!(rs("patient/Observation.read").perms, Perms::V1_READ);
        assert_eq!(rs("user/Patient.write").perms, Perms::V1_WRITE);
        assert_eq!(rs("system/*.*").perms, Perms::ALL);
        assert_eq!(rs("patient/Observation.read").to_string(), "patient/Observation.read", "rendered as asked");
        assert_eq!(rs("patient/Observation.rs").to_string(), "patient/Observation.rs");
    }

    #[test]
    fn granular_filters_are_parsed_sorted_and_rendered() {
        let r =
            rs("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory");
        assert_eq!(r.filter.len(), 1);
        assert_eq!(r.filter[0].0, "category");
        let a = rs("patient/Condition.rs?b=2&a=1");
        let b = rs("patient/Condition.rs?a=1&b=2");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "patient/Condition.rs?a=1&b=2");
    }

    #[test]
    fn rejects_unknown_contexts_types_and_shapes() {
        for bad in [
            "admin/Patient.read",
            "patient/Nope.read",
            "patient/Observation",
            "patient/Observation.",
            "patient/Observation.sr",
            "patient/Observation.readwrite",
            "patient/Observation.read?category=x",
            "patient/Observation.rs?",
            "patient/Observation.rs?=x",
            "patient/Observation.rs?category=",
            "patient/Observation.rs?cat egory=x",
            "Patient.read",
            "launch/other",
            "openid2",
            "",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn identity_and_launch_scopes() {
        let s = set("launch launch/patient launch/encounter openid fhirUser profile offline_access online_access");
        assert_eq!(s.iter().count(), 8);
        assert_eq!(
            s.to_string(),
            "launch launch/patient launch/encounter openid fhirUser profile offline_access online_access"
        );
    }

    #[test]
    fn malformed_scopes_are_dropped_and_reported() {
        let (s, errors) = ScopeSet::parse("patient/Patient.rs patient/*.everything openid");
        assert_eq!(s.to_string(), "patient/Patient.rs openid");
        assert_eq!(errors, vec![ScopeError::BadPermissions("patient/*.everything".into())]);
    }

    #[test]
    fn repeats_collapse() {
        assert_eq!(set("openid openid patient/Patient.rs patient/Patient.rs").to_string(), "openid patient/Patient.rs");
    }

    #[test]
    fn wildcard_type_never_covers_audit_event() {
        assert!(TypeSel::Any.matches("Observation"));
        assert!(!TypeSel::Any.matches("AuditEvent"));
        assert!(TypeSel::Named("AuditEvent".into()).matches("AuditEvent"));
        let ceiling = set("user/*.cruds");
        let requested = set("user/AuditEvent.rs user/Patient.rs");
        assert_eq!(ScopeSet::grant(&requested, &[client(&ceiling)]).to_string(), "user/Patient.rs");
    }

    #[test]
    fn grant_is_the_intersection_of_request_client_and_roles() {
        let requested =
            set("launch/patient openid fhirUser patient/Observation.cruds patient/Patient.rs offline_access");
        let client_ceiling = set("launch/patient openid fhirUser patient/*.rs");
        let role = set("patient/*.cruds");
        let g = ScopeSet::grant(&requested, &[client(&client_ceiling), roles(&role)]);
        assert_eq!(g.to_string(), "launch/patient openid fhirUser patient/Observation.rs patient/Patient.rs");
    }

    #[test]
    fn a_role_without_the_type_removes_it() {
        let requested = set("user/Observation.rs user/Patient.rs");
        let client_ceiling = set("user/*.cruds");
        let role = set("user/Patient.r");
        let g = ScopeSet::grant(&requested, &[client(&client_ceiling), roles(&role)]);
        assert_eq!(g.to_string(), "user/Patient.r");
    }

    #[test]
    fn contexts_do_not_cover_each_other() {
        let requested = set("system/Patient.rs patient/Patient.rs");
        let ceiling = set("user/*.cruds");
        assert!(ScopeSet::grant(&requested, &[client(&ceiling)]).is_empty());
    }

    #[test]
    fn wildcard_request_under_named_ceilings_narrows_to_those_types() {
        let requested = set("patient/*.rs");
        let ceiling = set("patient/Observation.rs patient/Patient.r");
        let g = ScopeSet::grant(&requested, &[client(&ceiling)]);
        assert_eq!(g.to_string(), "patient/Observation.rs patient/Patient.r");
    }

    #[test]
    fn v1_and_v2_requests_combine_as_a_union() {
        // `user/X.rs` and `user/X.write` must not lose the write part ("first scope wins").
        let requested = set("user/Observation.rs user/Observation.write");
        let ceiling = set("user/*.cruds");
        let g = ScopeSet::grant(&requested, &[client(&ceiling)]);
        let perms = g.resource_scopes().fold(Perms::NONE, |p, r| p.union(r.perms));
        assert_eq!(perms, Perms::ALL);
    }

    #[test]
    fn filtered_ceiling_covers_only_the_same_filter() {
        let lab = "patient/Observation.rs?category=laboratory";
        let ceiling = set(lab);
        assert_eq!(ScopeSet::grant(&set(lab), &[client(&ceiling)]).to_string(), lab);
        assert!(ScopeSet::grant(&set("patient/Observation.rs"), &[client(&ceiling)]).is_empty());
        assert!(ScopeSet::grant(&set("patient/Observation.rs?category=vital-signs"), &[client(&ceiling)]).is_empty());
        // an unfiltered ceiling allows a filtered (narrower) request
        let wide = set("patient/Observation.rs");
        assert_eq!(ScopeSet::grant(&set(lab), &[client(&wide)]).to_string(), lab);
    }

    #[test]
    fn non_resource_scopes_need_the_client_ceiling() {
        let requested = set("openid fhirUser offline_access patient/Patient.rs");
        let client_ceiling = set("openid patient/Patient.rs");
        let role = set("patient/*.rs");
        let g = ScopeSet::grant(&requested, &[client(&client_ceiling), roles(&role)]);
        assert_eq!(g.to_string(), "openid patient/Patient.rs");
    }

    #[test]
    fn no_ceiling_scopes_grant_nothing() {
        let empty = ScopeSet::default();
        assert!(ScopeSet::grant(&set("patient/*.cruds openid"), &[client(&empty)]).is_empty());
    }
}
