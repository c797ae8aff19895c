//! The access predicate: which stored resources a request may touch at all.
//!
//! The policy layer produces one per request; the store compiles it into the SQL of every
//! read path (read, vread, history, search, conditional matching, transaction entries) and
//! re-checks each returned row with [`AccessPredicate::admits`]. It is deliberately a closed
//! enum: a store that does not know how to compile a variant cannot silently ignore it.

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
}

impl AccessPredicate {
    /// The in-memory evaluator: does a stored resource with this type, id and set of
    /// patient-compartment memberships pass the predicate?
    pub fn admits(&self, resource_type: &str, id: &str, compartments: &[String]) -> bool {
        match self {
            AccessPredicate::AllowAll => true,
            AccessPredicate::DenyAll => false,
            AccessPredicate::PatientCompartment(patients) => {
                (resource_type == "Patient" && patients.iter().any(|p| p == id))
                    || compartments.iter().any(|c| patients.contains(c))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compartment_predicate_admits_members_only() {
        let p = AccessPredicate::PatientCompartment(vec!["a".into()]);
        assert!(p.admits("Patient", "a", &["a".into()]));
        assert!(p.admits("Observation", "o1", &["a".into()]));
        assert!(!p.admits("Observation", "o2", &["b".into()]));
        assert!(!p.admits("Observation", "o3", &[]));
        assert!(!p.admits("Patient", "b", &["b".into()]));
    }

    #[test]
    fn deny_all_denies_and_allow_all_allows() {
        assert!(!AccessPredicate::DenyAll.admits("Patient", "a", &["a".into()]));
        assert!(AccessPredicate::AllowAll.admits("Patient", "a", &[]));
    }
}
