//! The HTTP edge: routes, content negotiation, body limits, request headers into a
//! [`RequestContext`], and [`Reply`] / [`ApiError`] into responses. Nothing here decides
//! what data a request may see; it only translates.

use std::sync::Arc;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bastion_fhir::IssueType;
use bastion_fhir::primitives::Instant;
use bastion_search::AccessPredicate;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::AuthService;
use crate::engine::{Engine, Reply, ReplyBody, RequestContext};
use crate::error::ApiError;
use crate::interaction::{self, Body, Conditions, Interaction, PreferReturn, parse_etag};

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// What every handler may reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub auth: Arc<AuthService>,
    /// Development only (`auth.disabled`): the FHIR API answers without a token.
    pub auth_disabled: bool,
    /// What a caller without a token may do (`auth.anonymous_read`); `None`: nothing.
    pub anonymous: Option<Arc<bastion_policy::AccessScope>>,
}

/// The scope of callers without a token, from `auth.anonymous_read`.
pub fn anonymous_scope(config: &crate::Config) -> Result<Option<Arc<bastion_policy::AccessScope>>, String> {
    if config.auth.anonymous_read.is_empty() {
        return Ok(None);
    }
    // Labels as for the least of callers: normal confidentiality, no sensitivity.
    let clearance = bastion_policy::Clearance::new(
        bastion_fhir::labels::Confidentiality::N,
        bastion_policy::Sensitivities::Only(Vec::new()),
        bastion_auth::purpose::DEFAULT,
        false,
        config.privacy.label_policy()?,
    );
    bastion_policy::AccessScope::anonymous_read(&config.auth.anonymous_read)
        .map(|s| Some(Arc::new(s.with_clearance(clearance))))
        .map_err(|e| format!("auth.anonymous_read: {e}"))
}

/// Who is calling, as far as the FHIR API is concerned.
enum Caller {
    /// `metadata`, or authentication disabled: no restriction.
    Unrestricted,
    /// No token, where the deployment opened some types to anonymous reading.
    Anonymous(Arc<bastion_policy::AccessScope>),
    Token(Arc<crate::auth::Principal>),
}

impl FromRef<AppState> for Arc<AuthService> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let cors = Arc::new(CorsPolicy { app_origins: state.auth.app_origins() });
    Router::new()
        .route("/health", get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"pass\"}") }))
        .route("/auth/authorize", get(crate::auth::authorize).post(crate::auth::authorize))
        .route("/auth/login", post(crate::auth::login))
        .route("/auth/consent", post(crate::auth::consent))
        .route("/auth/launch", post(crate::auth::launch))
        .route("/auth/smart-style.json", get(crate::auth::smart_style))
        .route("/auth/assets/style.css", get(crate::auth::stylesheet))
        .route("/auth/token", post(crate::auth::token))
        .route("/auth/introspect", post(crate::auth::introspect))
        .route("/auth/revoke", post(crate::auth::revoke))
        .route("/auth/jwks", get(crate::auth::jwks))
        .route("/auth/.well-known/openid-configuration", get(crate::auth::openid_configuration))
        .route("/fhir/.well-known/smart-configuration", get(crate::auth::smart_configuration))
        .route("/fhir", any(fhir))
        .route("/fhir/", any(fhir))
        .route("/fhir/{*path}", any(fhir))
        .fallback(|| async { error_response(&ApiError::NotFound("no such endpoint".into())) })
        .layer(axum::middleware::from_fn_with_state(cors, cors_layer))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("request handler panicked");
            error_response(&ApiError::Internal("panic".into()))
        }))
        .with_state(state)
}

/// Who may call from a browser on another origin (INTERFACE.md, CORS): anyone for the
/// discovery documents, `metadata`, the JWKS and the style; the origins of registered
/// `redirect_uris` for the API and the token endpoints; nobody for the login pages.
struct CorsPolicy {
    app_origins: Vec<String>,
}

enum CorsRule {
    Open,
    Apps,
    None,
}

fn cors_rule(path: &str) -> CorsRule {
    match path {
        "/fhir/metadata"
        | "/fhir/.well-known/smart-configuration"
        | "/auth/.well-known/openid-configuration"
        | "/auth/jwks"
        | "/auth/smart-style.json" => CorsRule::Open,
        "/auth/token" | "/auth/revoke" | "/auth/introspect" => CorsRule::Apps,
        p if p == "/fhir" || p.starts_with("/fhir/") => CorsRule::Apps,
        _ => CorsRule::None,
    }
}

const CORS_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const CORS_REQUEST_HEADERS: &str = "authorization, content-type, accept, if-match, if-none-match, if-none-exist, if-modified-since, prefer, x-request-id, x-provenance";
const CORS_EXPOSED_HEADERS: &str = "location, content-location, etag, last-modified, x-request-id";

async fn cors_layer(State(policy): State<Arc<CorsPolicy>>, request: Request, next: axum::middleware::Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let allow: Option<HeaderValue> = match (cors_rule(request.uri().path()), origin) {
        (CorsRule::Open, Some(_)) => Some(HeaderValue::from_static("*")),
        (CorsRule::Apps, Some(o)) if policy.app_origins.contains(&o) => HeaderValue::from_str(&o).ok(),
        _ => None,
    };
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    let h = response.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(o) = allow {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        if preflight {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(CORS_METHODS));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(CORS_REQUEST_HEADERS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        } else {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(CORS_EXPOSED_HEADERS));
        }
    }
    response
}

pub fn error_response(e: &ApiError) -> Response {
    let body = serde_json::to_vec(&e.outcome().to_json()).unwrap_or_default();
    let mut r = (e.status(), body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    if matches!(e, ApiError::PayloadTooLarge(_)) {
        // The rest of the body is never read: tell the client not to reuse the connection.
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

fn media_type(v: &str) -> String {
    v.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn is_fhir_json(mt: &str) -> bool {
    matches!(mt, "application/fhir+json" | "application/json" | "application/json+fhir")
}

/// `_format` and `Accept`: can the client take JSON?
fn check_acceptable(query: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "_format" && !matches!(v.as_ref(), "json" | "application/json" | "application/fhir+json" | "fhir+json")
        {
            return Err(ApiError::NotAcceptable(format!(
                "_format '{v}' is not supported; this server speaks application/fhir+json"
            )));
        }
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    if accept.trim().is_empty() {
        return Ok(());
    }
    let ok = accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let mt = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        !refused && (is_fhir_json(&mt) || mt == "*/*" || mt == "application/*")
    });
    if ok { Ok(()) } else { Err(ApiError::NotAcceptable("this server answers only with application/fhir+json".into())) }
}

fn prefer(headers: &HeaderMap) -> (PreferReturn, bool) {
    let mut ret = PreferReturn::default();
    let mut strict = false;
    for v in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
        for token in v.split([',', ';']) {
            match token.trim().replace(' ', "").as_str() {
                "return=minimal" => ret = PreferReturn::Minimal,
                "return=representation" => ret = PreferReturn::Representation,
                "return=OperationOutcome" => ret = PreferReturn::OperationOutcome,
                "handling=strict" => strict = true,
                "handling=lenient" => strict = false,
                _ => {}
            }
        }
    }
    (ret, strict)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn conditions(headers: &HeaderMap) -> Result<Conditions, ApiError> {
    let if_match = match header_str(headers, "if-match") {
        Some(v) => Some(parse_etag(v).ok_or_else(|| {
            ApiError::invalid(IssueType::Invalid, "If-Match must be a version ETag such as W/\"3\"", None)
        })?),
        None => None,
    };
    Ok(Conditions {
        if_match,
        if_none_match: header_str(headers, "if-none-match").map(str::to_string),
        if_modified_since: header_str(headers, "if-modified-since").and_then(Instant::parse_http_date),
        if_none_exist: header_str(headers, "if-none-exist").map(|v| v.trim_start_matches('?').to_string()),
    })
}

/// Reads the body within the configured limit (413 above it).
async fn read_body(body: AxumBody, headers: &HeaderMap, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the request body is larger than this server's limit of {limit} bytes"));
    if header_str(headers, "content-length").and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.to_string().contains("recursion limit") {
            "the JSON is nested too deeply".to_string()
        } else {
            format!("the body is not valid JSON (line {}, column {})", e.line(), e.column())
        };
        ApiError::invalid(IssueType::Structure, what, None)
    })
}

/// Turns the body into a [`Body`] according to its Content-Type; form-encoded `_search`
/// bodies become query parameters instead.
fn decode_body(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    bytes: &[u8],
    query: &mut String,
) -> Result<Option<Body>, ApiError> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(None);
    }
    let mt = header_str(headers, "content-type").map(media_type);
    if path == "_search" || path.ends_with("/_search") {
        if bytes.is_empty() {
            return Ok(None);
        }
        if mt.as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(ApiError::UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded".into()));
        }
        let form = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::invalid(IssueType::Invalid, "the form body is not UTF-8", None))?;
        if !query.is_empty() && !form.is_empty() {
            query.push('&');
        }
        query.push_str(form);
        return Ok(None);
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    match mt.as_deref() {
        Some("application/json-patch+json") if *method == Method::PATCH => {
            Ok(Some(Body::JsonPatch(parse_json(bytes)?)))
        }
        Some(m) if is_fhir_json(m) && *method == Method::PATCH => Err(ApiError::UnsupportedMediaType(
            "FHIRPath Patch is not supported; send a JSON Patch as application/json-patch+json".into(),
        )),
        Some(m) if is_fhir_json(m) => Ok(Some(Body::Resource(parse_json(bytes)?))),
        Some(m) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{m}' is not supported; send application/fhir+json"
        ))),
        None => Err(ApiError::UnsupportedMediaType("Content-Type is missing; send application/fhir+json".into())),
    }
}

async fn fhir(State(state): State<AppState>, request: Request) -> Response {
    match handle(&state, request).await {
        Ok(r) => r,
        Err(e @ ApiError::Unauthorized) => {
            let mut r = error_response(&e);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bastion\", error=\"invalid_token\""),
            );
            r
        }
        Err(e @ ApiError::Forbidden(_)) => {
            let mut r = error_response(&e);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bastion\", error=\"insufficient_scope\""),
            );
            r
        }
        Err(e) => error_response(&e),
    }
}

/// Who is calling: the bearer token's principal; unrestricted for `metadata` and when
/// authentication is disabled; anonymous without a token where that is configured.
async fn caller(state: &AppState, path: &str, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if path == "metadata" || state.auth_disabled {
        return Ok(Caller::Unrestricted);
    }
    if !headers.contains_key(header::AUTHORIZATION) {
        return state.anonymous.clone().map(Caller::Anonymous).ok_or(ApiError::Unauthorized);
    }
    let token = crate::auth::bearer_token(headers).ok_or(ApiError::Unauthorized)?;
    match state.auth.authenticate(token).await {
        Ok(p) => Ok(Caller::Token(p)),
        Err(e) => {
            state.auth.record(crate::auth::events::SecurityEvent::BearerRefused { check: e.to_string() });
            Err(ApiError::Unauthorized)
        }
    }
}

async fn handle(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let engine = &*state.engine;
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().strip_prefix("/fhir").unwrap_or("").trim_start_matches('/').to_string();
    let caller = caller(state, &path, &parts.headers).await?;
    // Every request under break the glass is an emergency override, recorded before anything
    // else can fail.
    if let Caller::Token(p) = &caller
        && p.purpose_of_use == "BTG"
    {
        state.auth.record(crate::auth::events::SecurityEvent::EmergencyAccess {
            subject: p.subject.clone(),
            client: p.client_id.clone(),
            token_id: p.token_id.clone(),
            request: format!("{} {path}", parts.method),
        });
    }
    let mut query = parts.uri.query().unwrap_or("").to_string();
    check_acceptable(&query, &parts.headers)?;
    let bytes = read_body(body, &parts.headers, engine.limits.max_body_bytes).await?;
    let body = decode_body(&parts.method, &path, &parts.headers, &bytes, &mut query)?;
    let interaction = interaction::parse(parts.method.as_str(), &path, &query, body)?;
    let (prefer_return, strict) = prefer(&parts.headers);
    let ctx = RequestContext {
        conditions: conditions(&parts.headers)?,
        prefer_return,
        strict,
        // Paging tokens are bound to this.
        caller: match &caller {
            Caller::Token(p) => format!("{}|{}", p.client_id, p.subject),
            _ => "anonymous".to_string(),
        },
        // Metadata, or authentication disabled: nothing is restricted.
        scope: match &caller {
            Caller::Unrestricted => None,
            Caller::Anonymous(s) => Some(s.clone()),
            Caller::Token(p) => Some(engine.scope_of(p).await?),
        },
        // With a scope, every interaction gets its predicate from it (Engine::authorize); a
        // path that forgot to ask would see nothing, never everything.
        access: match &caller {
            Caller::Unrestricted => AccessPredicate::AllowAll,
            _ => AccessPredicate::DenyAll,
        },
        pending: Default::default(),
        break_glass_probe: match &caller {
            Caller::Token(p) => p.break_glass_access.clone(),
            _ => None,
        },
    };
    let is_write = interaction.is_write() || matches!(interaction, Interaction::Bundle { .. });
    let reply = match engine.execute(&ctx, interaction).await {
        // Without a token, what is not open to anonymous reading needs one: 401, not 403.
        Err(ApiError::Forbidden(_)) if matches!(caller, Caller::Anonymous(_)) => return Err(ApiError::Unauthorized),
        other => other?,
    };
    let reply = if is_write { reply.apply_prefer(prefer_return) } else { reply };
    Ok(render(reply))
}

fn render(reply: Reply) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(etag) = reply.etag().and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(t) = reply.last_modified.and_then(|t| HeaderValue::from_str(&t.to_http_date()).ok()) {
        headers.insert(header::LAST_MODIFIED, t);
    }
    if let Some(l) = reply.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        let name = if reply.status == StatusCode::CREATED { header::LOCATION } else { header::CONTENT_LOCATION };
        headers.insert(name, l);
    }
    let body = match reply.body {
        ReplyBody::None => Vec::new(),
        ReplyBody::Raw(b) => b,
        ReplyBody::Json(v) => serde_json::to_vec(&v).unwrap_or_default(),
    };
    if !body.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    }
    (reply.status, headers, body).into_response()
}
