//! Attribute rules: what a deployment says about access beyond the scopes and roles.
//!
//! What this is for: "a clinician sees and changes only records created within their own
//! organization", "nobody but the psychiatry role reaches PSY-labelled records", "this
//! research client sees these patients only". Each [`Rule`] names whom it applies to (roles,
//! organizations), what (resource types, actions) and which resources (a [`Condition`]); it
//! either allows (narrows what the scopes grant to what it names) or denies (removes what it
//! names). A deny beats any allow.
//!
//! What it is not: a grant. No rule widens what the token's scopes and the user's roles give;
//! rules only narrow. They are parsed from the `[[rules]]` tables of the configuration (the
//! server crate does that) and compiled into the same [`AccessPredicate`] as the scopes.

use bastion_search::AccessPredicate;
use bastion_search::query::{SystemMatch, TokenValue};

use crate::Action;

/// The `meta.tag` system under which the server records the organization a resource was
/// created within (the code is the organization's reference, `Organization/[id]`). The server
/// sets it from the Principal on create and keeps it on every later version; a client cannot
/// set, change or remove it.
pub const ORGANIZATION_TAG_SYSTEM: &str = "urn:bastion:creating-organization";

/// What a rule does with what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Where allow rules apply to a type and action, only what one of them names stays.
    Allow,
    /// What it names is removed, whatever any allow rule says.
    Deny,
}

/// The caller attributes rules are decided on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub roles: Vec<String>,
    /// `Organization/[id]`, from the user's (or backend client's) configuration.
    pub organization: Option<String>,
}

/// Which resources a rule names; every field set must hold (an empty condition names every
/// resource of the rule's types).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// Created within the caller's own organization (the stamped tag). A caller without an
    /// organization matches nothing.
    pub same_organization: bool,
    /// In the compartment of one of these patients (ids).
    pub patients: Vec<String>,
    /// Carrying one of these security labels (`meta.security`).
    pub security: Vec<TokenValue>,
    /// Carrying one of these tags (`meta.tag`).
    pub tags: Vec<TokenValue>,
}

/// One attribute rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    /// Applies to callers holding one of these roles; empty: every caller with a token.
    pub roles: Vec<String>,
    /// ... and belonging to one of these organizations; empty: whatever their organization.
    pub organizations: Vec<String>,
    /// Resource types it speaks about; empty: all.
    pub types: Vec<String>,
    /// Actions it speaks about; empty: all.
    pub actions: Vec<Action>,
    pub condition: Condition,
}

/// Why a rule in the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule {rule}: effect must be \"allow\" or \"deny\", not {value:?}")]
    UnknownEffect { rule: String, value: String },
    #[error("rule {rule}: actions may hold only the letters c r u d s, not {value:?}")]
    UnknownAction { rule: String, value: String },
    #[error("rule {rule}: {field} entry {value:?} must be system|code")]
    BadCoding { rule: String, field: &'static str, value: String },
    #[error("rule {rule}: patients entry {value:?} must be Patient/[id]")]
    BadPatient { rule: String, value: String },
    #[error("rule {rule}: organizations entry {value:?} must be Organization/[id]")]
    BadOrganization { rule: String, value: String },
    #[error("rule {rule}: organization must be \"same\" when set, not {value:?}")]
    UnknownOrganizationCondition { rule: String, value: String },
}

/// A rule as the configuration writes it, before checking.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub name: String,
    pub effect: String,
    pub roles: Vec<String>,
    pub organizations: Vec<String>,
    pub types: Vec<String>,
    pub actions: Option<String>,
    pub organization: Option<String>,
    pub patients: Vec<String>,
    pub security: Vec<String>,
    pub tags: Vec<String>,
}

impl Rule {
    /// Checks a configured rule; every mistake is an error at start, never a rule that
    /// silently matches nothing or everything.
    pub fn from_spec(spec: RuleSpec) -> Result<Rule, RuleError> {
        let name = spec.name;
        let effect = match spec.effect.as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            other => return Err(RuleError::UnknownEffect { rule: name, value: other.into() }),
        };
        let actions = match spec.actions {
            None => Vec::new(),
            Some(letters) => {
                let parsed: Option<Vec<Action>> = letters.chars().map(Action::from_letter).collect();
                match parsed {
                    Some(a) if !a.is_empty() => a,
                    _ => return Err(RuleError::UnknownAction { rule: name, value: letters }),
                }
            }
        };
        let same_organization = match spec.organization.as_deref() {
            None => false,
            Some("same") => true,
            Some(other) => return Err(RuleError::UnknownOrganizationCondition { rule: name, value: other.into() }),
        };
        for o in &spec.organizations {
            if !is_reference_to("Organization", o) {
                return Err(RuleError::BadOrganization { rule: name, value: o.clone() });
            }
        }
        let mut patients = Vec::new();
        for p in &spec.patients {
            match p.strip_prefix("Patient/").filter(|id| is_reference_to("Patient", p) && !id.is_empty()) {
                Some(id) => patients.push(id.to_string()),
                None => return Err(RuleError::BadPatient { rule: name, value: p.clone() }),
            }
        }
        let codings = |field: &'static str, values: &[String]| -> Result<Vec<TokenValue>, RuleError> {
            values
                .iter()
                .map(|v| match v.split_once('|') {
                    Some((system, code)) if !system.is_empty() && !code.is_empty() && !code.contains('|') => {
                        Ok(TokenValue { system: SystemMatch::Is(system.into()), code: Some(code.into()) })
                    }
                    _ => Err(RuleError::BadCoding { rule: name.clone(), field, value: v.clone() }),
                })
                .collect()
        };
        let security = codings("security", &spec.security)?;
        let tags = codings("tags", &spec.tags)?;
        Ok(Rule {
            effect,
            roles: spec.roles,
            organizations: spec.organizations,
            types: spec.types,
            actions,
            condition: Condition { same_organization, patients, security, tags },
            name,
        })
    }

    pub(crate) fn applies_to(&self, who: &Attributes) -> bool {
        (self.roles.is_empty() || self.roles.iter().any(|r| who.roles.contains(r)))
            && (self.organizations.is_empty()
                || who.organization.as_ref().is_some_and(|o| self.organizations.contains(o)))
    }

    /// Does it speak about `action` on `resource_type` (`None`: an interaction across all
    /// types, where the rule's types enter the predicate instead, see [`Rule::types_predicate`])?
    pub(crate) fn covers(&self, resource_type: Option<&str>, action: Action) -> bool {
        (self.actions.is_empty() || self.actions.contains(&action))
            && match resource_type {
                Some(t) => self.types.is_empty() || self.types.iter().any(|x| x == t),
                None => true,
            }
    }

    /// Its types as a predicate (every type when it names none).
    pub(crate) fn types_predicate(&self) -> AccessPredicate {
        if self.types.is_empty() {
            AccessPredicate::AllowAll
        } else {
            AccessPredicate::ResourceType(self.types.clone())
        }
    }
}

impl Condition {
    /// The resources it names, for a caller with `who`'s attributes.
    pub fn predicate(&self, who: &Attributes) -> AccessPredicate {
        let mut all = Vec::new();
        if self.same_organization {
            all.push(match &who.organization {
                Some(org) => AccessPredicate::Token {
                    param: "_tag".into(),
                    values: vec![TokenValue {
                        system: SystemMatch::Is(ORGANIZATION_TAG_SYSTEM.into()),
                        code: Some(org.clone()),
                    }],
                },
                None => AccessPredicate::DenyAll,
            });
        }
        if !self.patients.is_empty() {
            all.push(AccessPredicate::PatientCompartment(self.patients.clone()));
        }
        if !self.security.is_empty() {
            all.push(AccessPredicate::Token { param: "_security".into(), values: self.security.clone() });
        }
        if !self.tags.is_empty() {
            all.push(AccessPredicate::Token { param: "_tag".into(), values: self.tags.clone() });
        }
        AccessPredicate::All(all)
    }
}

fn is_reference_to(resource_type: &str, reference: &str) -> bool {
    reference.strip_prefix(resource_type).and_then(|r| r.strip_prefix('/')).is_some_and(|id| {
        !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    })
}
