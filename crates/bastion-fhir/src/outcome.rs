//! OperationOutcome: the one shape every error and warning takes on the wire.
//!
//! Diagnostics written here are shown to clients, so they must say what was wrong with
//! the *request* and never how the server is built (no SQL, paths, rule names).

use serde_json::{Value, json};

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueSeverity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl IssueSeverity {
    pub fn code(self) -> &'static str {
        match self {
            IssueSeverity::Fatal => "fatal",
            IssueSeverity::Error => "error",
            IssueSeverity::Warning => "warning",
            IssueSeverity::Information => "information",
        }
    }
}

/// `OperationOutcome.issue.code` (the subset of the IssueType value set Bastion uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Forbidden,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    Conflict,
    TooCostly,
    Throttled,
    Exception,
    Informational,
    Suppressed,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Processing => "processing",
            IssueType::NotSupported => "not-supported",
            IssueType::Duplicate => "duplicate",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::TooLong => "too-long",
            IssueType::Conflict => "conflict",
            IssueType::TooCostly => "too-costly",
            IssueType::Throttled => "throttled",
            IssueType::Exception => "exception",
            IssueType::Informational => "informational",
            IssueType::Suppressed => "suppressed",
        }
    }
}

/// One `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: IssueSeverity,
    pub code: IssueType,
    pub diagnostics: String,
    /// FHIRPath-style location of the offending element, e.g. `Patient.birthDate`.
    pub expression: Option<String>,
    /// `issue.details`, a CodeableConcept.
    pub details: Option<Value>,
}

impl Issue {
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Issue { severity: IssueSeverity::Error, code, diagnostics: diagnostics.into(), expression: None, details: None }
    }

    pub fn warning(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: IssueSeverity::Warning,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
            details: None,
        }
    }

    pub fn information(diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: IssueSeverity::Information,
            code: IssueType::Informational,
            diagnostics: diagnostics.into(),
            expression: None,
            details: None,
        }
    }

    /// R4's `operationoutcome-example-break-the-glass`: something was withheld that breaking
    /// the glass would reveal.
    pub fn withheld_break_the_glass() -> Self {
        let text = "Additional information may be available using the Break-The-Glass Protocol";
        Issue {
            severity: IssueSeverity::Information,
            code: IssueType::Suppressed,
            diagnostics: text.into(),
            expression: None,
            details: Some(json!({
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}],
                "text": text
            })),
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": self.severity.code(),
            "code": self.code.code(),
            "diagnostics": self.diagnostics,
        });
        if let Some(expr) = &self.expression {
            issue["expression"] = json!([expr]);
        }
        if let Some(d) = &self.details {
            issue["details"] = d.clone();
        }
        issue
    }
}

/// A whole OperationOutcome resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationOutcome {
    pub issues: Vec<Issue>,
}

impl OperationOutcome {
    pub fn new(issues: Vec<Issue>) -> Self {
        OperationOutcome { issues }
    }

    pub fn single(issue: Issue) -> Self {
        OperationOutcome { issues: vec![issue] }
    }

    /// An outcome that reports success (used for `Prefer: return=OperationOutcome`).
    pub fn ok(diagnostics: impl Into<String>) -> Self {
        Self::single(Issue::information(diagnostics))
    }

    pub fn to_json(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![Issue::information("All OK").to_json()]
        } else {
            self.issues.iter().map(Issue::to_json).collect()
        };
        json!({ "resourceType": "OperationOutcome", "issue": issues })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_with_expression_serialises_as_fhir() {
        let oo = OperationOutcome::single(Issue::error(IssueType::Value, "bad date").at("Patient.birthDate"));
        let v = oo.to_json();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["severity"], "error");
        assert_eq!(v["issue"][0]["code"], "value");
        assert_eq!(v["issue"][0]["expression"][0], "Patient.birthDate");
    }

    #[test]
    fn empty_outcome_still_has_an_issue() {
        // issue is 1..* in R4: an OperationOutcome without one is invalid.
        let v = OperationOutcome::default().to_json();
        assert_eq!(v["issue"].as_array().unwrap().len(), 1);
    }
}
