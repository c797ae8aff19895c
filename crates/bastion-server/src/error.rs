//! The server's one error type, and the one place where errors become HTTP responses:
//! an OperationOutcome with the right status and nothing of the server's insides.

use axum::http::StatusCode;
use bastion_fhir::{Issue, IssueType, OperationOutcome};
use bastion_search::SearchError;
use bastion_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    /// The request is malformed or fails basic FHIR validation (400).
    #[error("bad request")]
    BadRequest(Vec<Issue>),
    /// The request is well-formed but cannot be processed, e.g. a patch yielding an
    /// invalid resource (422).
    #[error("unprocessable")]
    Unprocessable(Vec<Issue>),
    #[error("not found: {0}")]
    NotFound(String),
    /// Not found for this caller, and the deployment lets it know that breaking the glass
    /// would reveal something (404 with the R4 break-the-glass hint).
    #[error("not found (withheld): {0}")]
    Withheld(String),
    #[error("gone")]
    Gone { resource_type: String, id: String, version: u64 },
    #[error("method not allowed")]
    MethodNotAllowed(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    /// No valid bearer token (401, with `WWW-Authenticate: Bearer`). Which check failed is
    /// logged, never told.
    #[error("unauthorized")]
    Unauthorized,
    /// The token does not grant this interaction on this type at all (403,
    /// `insufficient_scope`), decided before any data is touched.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Something broke inside the server. The cause is logged; the client learns nothing.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(code: IssueType, diagnostics: impl Into<String>, expression: Option<&str>) -> Self {
        let mut issue = Issue::error(code, diagnostics);
        issue.expression = expression.map(str::to_string);
        ApiError::BadRequest(vec![issue])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) | ApiError::Withheld(_) => StatusCode::NOT_FOUND,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn outcome(&self) -> OperationOutcome {
        let single = |code, msg: &str| OperationOutcome::single(Issue::error(code, msg));
        match self {
            ApiError::BadRequest(issues) | ApiError::Unprocessable(issues) => OperationOutcome::new(issues.clone()),
            ApiError::NotFound(what) => single(IssueType::NotFound, what),
            ApiError::Withheld(what) => OperationOutcome::new(vec![
                Issue::error(IssueType::NotFound, what.as_str()),
                Issue::withheld_break_the_glass(),
            ]),
            ApiError::Gone { resource_type, id, version } => {
                single(IssueType::Deleted, &format!("{resource_type}/{id} was deleted (version {version})"))
            }
            ApiError::MethodNotAllowed(m) => single(IssueType::NotSupported, m),
            ApiError::Conflict(m) => single(IssueType::Conflict, m),
            ApiError::PreconditionFailed(m) => single(IssueType::Conflict, m),
            ApiError::PayloadTooLarge(m) => single(IssueType::TooLong, m),
            ApiError::UnsupportedMediaType(m) => single(IssueType::NotSupported, m),
            ApiError::NotAcceptable(m) => single(IssueType::NotSupported, m),
            ApiError::Unauthorized => single(IssueType::Login, "a valid bearer token is required"),
            ApiError::Forbidden(m) => single(IssueType::Forbidden, &format!("insufficient_scope: {m}")),
            ApiError::Internal(_) => single(IssueType::Exception, "the server could not complete the request"),
        }
    }

    /// Adds `Bundle.entry[i]` in front of every expression (transaction failures).
    pub fn in_entry(self, index: usize) -> Self {
        let prefix = |issues: Vec<Issue>| {
            issues
                .into_iter()
                .map(|mut i| {
                    i.expression = Some(match i.expression.take() {
                        Some(e) => format!(
                            "Bundle.entry[{index}].resource.{}",
                            e.split_once('.').map_or(e.as_str(), |(_, r)| r)
                        ),
                        None => format!("Bundle.entry[{index}]"),
                    });
                    i
                })
                .collect()
        };
        match self {
            ApiError::BadRequest(issues) => ApiError::BadRequest(prefix(issues)),
            ApiError::Unprocessable(issues) => ApiError::Unprocessable(prefix(issues)),
            other => other,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionConflict { expected, current } => ApiError::PreconditionFailed(format!(
                "If-Match version {expected} does not match the current version {current}"
            )),
            StoreError::Conflict(_) => {
                ApiError::Conflict("the resource was changed by a concurrent request; retry".into())
            }
            other => {
                tracing::error!(error = %other, "storage error");
                ApiError::Internal(other.to_string())
            }
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        ApiError::BadRequest(vec![Issue::error(
            match e {
                SearchError::UnknownParameter { .. }
                | SearchError::UnsupportedParameter { .. }
                | SearchError::UnsupportedModifier { .. } => IssueType::NotSupported,
                _ => IssueType::Invalid,
            },
            e.to_string(),
        )])
    }
}
