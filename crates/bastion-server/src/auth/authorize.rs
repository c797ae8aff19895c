//! The authorization-code flow's browser side: `GET|POST /auth/authorize`, the login page
//! (`POST /auth/login`), the consent page (`POST /auth/consent`), and `POST /auth/launch`,
//! where an EHR front end registers a launch context.
//!
//! The flow is a chain of single-use grants in the store, each step using up the previous one,
//! so a page cannot be submitted twice and every node on the database can serve any step:
//!
//! ```text
//! authorize --(login grant)--> login --(consent grant)--> consent --(code grant)--> token endpoint
//! ```
//!
//! Each pending grant is bound to the browser that started it (the SHA-256 of an `HttpOnly`,
//! `SameSite=Lax` cookie) and carries a CSRF token that the form must echo, so another site
//! can neither submit the forms in the user's browser nor hand the user a half-finished flow.
//!
//! Errors before the client and its `redirect_uri` are known to be good are shown as a page
//! and never redirected (RFC 6749 §4.1.2.1: no open redirect); every later error goes back
//! to the app as `error` and `state`.
//!
//! Not here: the token endpoint's side of the code (in the parent module).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bastion_auth::{AuthError, Ceiling, Scope, ScopeContext, ScopeSet, category_sub_scopes, pkce};
use bastion_store::{Grant, GrantUse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::events::SecurityEvent;
use super::lockout::Key;
use super::pages::{self, ConsentPage, ScopeChoice, html_response};
use super::{AuthService, ClientKind, digest, now, random_token, store_error};

const COOKIE: &str = "bastion_auth";
/// How long a user has for the login and consent pages.
const PAGE_TTL_SECS: i64 = 600;
/// Authorization codes are short-lived (RFC 6749 §4.1.2 recommends at most 10 minutes).
pub(super) const CODE_TTL_SECS: i64 = 60;
/// A launch context registered by an EHR is usable for this long.
const LAUNCH_TTL_SECS: i64 = 600;
/// The most patients the chooser lists.
const PATIENT_CHOICES: usize = 200;

/// An EHR launch context (`POST /auth/launch`), bound to the user who registered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LaunchContext {
    pub user: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
}

/// A checked authorization request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub launch: Option<LaunchContext>,
    /// `purpose_of_use` as asked (checked once the user is known).
    pub purpose_of_use: Option<String>,
}

/// Between the authorization request and the code: who the browser is, and who signed in.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    request: AuthorizationRequest,
    browser: String,
    csrf: String,
    user: Option<String>,
    /// The scopes offered on the consent page, and whether a patient must be chosen.
    offered: Vec<String>,
    choose_patient: bool,
}

/// What an authorization code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub user: String,
    pub scope: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    /// The refresh family every token from this code belongs to: a second use of the code
    /// revokes it.
    pub family: String,
    pub ehr_launch: bool,
    pub purpose_of_use: String,
}

/// How an authorization request fails.
enum Failure {
    /// The client or redirect URI cannot be trusted: show a page, never redirect.
    Page(StatusCode, &'static str),
    /// Back to the app with `error` (and `state`).
    Redirect { redirect_uri: String, state: Option<String>, error: &'static str, description: &'static str },
}

fn redirect_to(uri: &str, params: &[(&str, &str)]) -> Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        query.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    let location = format!("{uri}{sep}{}", query.finish());
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

fn fail(f: Failure) -> Response {
    match f {
        Failure::Page(status, message) => {
            tracing::info!(reason = message, "authorization request refused without redirect");
            html_response(status, pages::error("Cannot continue", message), &[])
        }
        Failure::Redirect { redirect_uri, state, error, description } => {
            tracing::info!(error, reason = description, "authorization request refused");
            let mut params = vec![("error", error), ("error_description", description)];
            if let Some(s) = state.as_deref() {
                params.push(("state", s));
            }
            redirect_to(&redirect_uri, &params)
        }
    }
}

/// The origin (`scheme://host[:port]`) of a URL.
pub(super) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// Parameters of a GET query or a POST form; a repeated parameter is an error.
fn single_params(raw: &[u8]) -> Option<HashMap<String, String>> {
    super::form(raw).ok()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn client_address(request: &Request) -> Option<std::net::IpAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

impl AuthService {
    fn set_cookie(&self, value: &str) -> HeaderValue {
        let secure = if self.public_url.starts_with("https://") { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; Path=/auth; HttpOnly; SameSite=Lax; Max-Age={PAGE_TTL_SECS}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Checks an authorization request, in the order that decides whether errors may be
    /// redirected.
    async fn check_authorization(&self, p: &HashMap<String, String>) -> Result<AuthorizationRequest, Failure> {
        let client_id = p.get("client_id").ok_or(Failure::Page(StatusCode::BAD_REQUEST, "client_id is missing."))?;
        let client = self
            .clients
            .get(client_id)
            .ok_or(Failure::Page(StatusCode::BAD_REQUEST, "This application is not registered with this server."))?;
        let redirect_uri =
            p.get("redirect_uri").ok_or(Failure::Page(StatusCode::BAD_REQUEST, "redirect_uri is missing."))?;
        // Exact string match: no prefix, no normalisation (RFC 9700 §4.1.3).
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                "The redirect_uri is not one registered for this application.",
            ));
        }
        let state = p.get("state").cloned();
        let back = |error, description| Failure::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
            description,
        };
        if client.kind == ClientKind::Backend {
            return Err(back("unauthorized_client", "a backend client cannot use the authorization code flow"));
        }
        if p.get("response_type").map(String::as_str) != Some("code") {
            return Err(back("unsupported_response_type", "response_type must be code"));
        }
        // `resource` (RFC 8707) is accepted as a synonym of `aud`.
        let aud = p.get("aud").or_else(|| p.get("resource"));
        if aud.map(|a| a.trim_end_matches('/')) != Some(self.fhir_base.as_str()) {
            return Err(back("invalid_request", "aud must be this server's FHIR base URL"));
        }
        let challenge = p.get("code_challenge").map(String::as_str);
        if let Err(e) = pkce::check_challenge(challenge, p.get("code_challenge_method").map(String::as_str)) {
            return Err(back(
                "invalid_request",
                match e {
                    pkce::PkceError::MethodNotS256 => "code_challenge_method must be S256",
                    _ => "a well-formed S256 code_challenge is required",
                },
            ));
        }
        let scope =
            p.get("scope").filter(|s| !s.trim().is_empty()).ok_or_else(|| back("invalid_scope", "scope is missing"))?;
        let launch = match p.get("launch") {
            None => None,
            Some(id) => {
                let payload = self
                    .store
                    .peek_grant("launch", &digest(id), now())
                    .await
                    .map_err(|_| back("server_error", "the launch context could not be read"))?
                    .ok_or_else(|| back("invalid_request", "the launch parameter is unknown or has expired"))?;
                Some(
                    serde_json::from_str::<LaunchContext>(&payload)
                        .map_err(|_| back("server_error", "the launch context could not be read"))?,
                )
            }
        };
        Ok(AuthorizationRequest {
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            scope: scope.clone(),
            state,
            code_challenge: challenge.unwrap_or_default().to_string(),
            nonce: p.get("nonce").cloned(),
            launch,
            purpose_of_use: p.get("purpose_of_use").cloned(),
        })
    }

    async fn put_pending(&self, kind: &'static str, pending: &Pending) -> Result<String, AuthError> {
        let id = random_token();
        let now = now();
        let grant = Grant {
            id: digest(&id),
            kind,
            payload: serde_json::to_string(pending).map_err(|e| AuthError::KeyStore(e.to_string()))?,
            valid_until: now + PAGE_TTL_SECS,
            keep_until: now + PAGE_TTL_SECS,
        };
        let mut tx = self.store.begin().await.map_err(store_error)?;
        tx.put_grant(&grant, now).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(id)
    }

    /// The pending grant a form names, if this browser started it and the CSRF token matches.
    async fn pending_for(
        &self,
        kind: &'static str,
        form: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<Pending, Response> {
        let expired = || bad_page("This page has expired or was opened elsewhere. Start again from the application.");
        let id = form.get("request").ok_or_else(expired)?;
        let payload = match self.store.peek_grant(kind, &digest(id), now()).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(expired()),
            Err(_) => return Err(server_error_page()),
        };
        let pending: Pending = serde_json::from_str(&payload).map_err(|_| server_error_page())?;
        let browser_ok =
            cookie_value(headers).is_some_and(|c| bastion_auth::secret::secret_matches(&digest(&c), &pending.browser));
        let csrf_ok = form.get("csrf").is_some_and(|c| bastion_auth::secret::secret_matches(c, &pending.csrf));
        if !browser_ok || !csrf_ok {
            tracing::info!(browser_ok, csrf_ok, "authorization form refused: not from the browser that started it");
            return Err(expired());
        }
        Ok(pending)
    }

    /// Uses up a pending grant; the page to show if another submission got there first.
    async fn use_pending(&self, kind: &'static str, form: &HashMap<String, String>) -> Result<(), Response> {
        let id = form.get("request").map(|r| digest(r)).unwrap_or_default();
        let used = async {
            let mut tx = self.store.begin().await.map_err(store_error)?;
            let used = tx.use_grant(kind, &id, now()).await.map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            Ok::<_, AuthError>(used)
        };
        match used.await {
            Ok(GrantUse::First(_)) => Ok(()),
            Ok(_) => Err(bad_page("This page was already submitted.")),
            Err(_) => Err(server_error_page()),
        }
    }

    fn client_name<'a>(&'a self, request: &'a AuthorizationRequest) -> &'a str {
        &request.client_id
    }

    /// The scopes the user is asked about: the request under the client's and the user's
    /// ceilings, each followed by its category sub-scopes.
    fn consent_choices(&self, request: &AuthorizationRequest, user: &super::User) -> Vec<ScopeChoice> {
        let grantable = self.grantable(&request.scope, &request.client_id, user, request.launch.is_some());
        let mut out = Vec::new();
        for s in grantable.iter() {
            let description = match s {
                Scope::Resource(r) => describe(r),
                Scope::Launch => "Use the record opened in your EHR".into(),
                Scope::LaunchPatient => "Choose a patient for the application".into(),
                Scope::LaunchEncounter => "The encounter in context".into(),
                Scope::OpenId | Scope::Profile => "Know who you are".into(),
                Scope::FhirUser => "Know your FHIR user record".into(),
                Scope::OfflineAccess => "Keep access while you are signed out".into(),
                Scope::OnlineAccess => "Keep access while you are signed in".into(),
            };
            out.push(ScopeChoice { scope: s.to_string(), description, checked: true, sub: false });
            if let Scope::Resource(r) = s {
                for sub in category_sub_scopes(r) {
                    let code = sub.filter[0].1.rsplit('|').next().unwrap_or_default().to_string();
                    out.push(ScopeChoice {
                        scope: sub.to_string(),
                        description: format!("only {code}"),
                        checked: false,
                        sub: true,
                    });
                }
            }
        }
        out
    }

    /// `requested` ∩ the client's scopes ∩ the user's roles. `launch` is kept only for a
    /// request that carries a launch context.
    pub(super) fn grantable(&self, requested: &str, client_id: &str, user: &super::User, ehr_launch: bool) -> ScopeSet {
        let (requested, _malformed) = ScopeSet::parse(requested);
        let Some(client) = self.clients.get(client_id) else { return ScopeSet::default() };
        let mut ceilings = vec![Ceiling { scopes: &client.scopes, resource_only: false }];
        ceilings.push(Ceiling { scopes: &user.role_permissions, resource_only: true });
        let granted = ScopeSet::grant(&requested, &ceilings);
        let mut out = ScopeSet::default();
        for s in granted.iter() {
            let keep = match s {
                Scope::Launch => ehr_launch,
                // A user's token never carries system/ scopes.
                Scope::Resource(r) => r.context != ScopeContext::System,
                _ => true,
            };
            if keep {
                out.insert(s.clone());
            }
        }
        out
    }

    /// The records of `resource_type` the deployment's rules let `user` reach at all, whatever
    /// the scopes of a token: what a launch context and the patient chooser may name.
    fn user_reach(&self, user: &super::User, resource_type: &str) -> bastion_search::AccessPredicate {
        use bastion_policy::{Action, Attributes, Context, Permission};
        let everything = Permission {
            context: Context::User,
            resource_type: Some(resource_type.to_string()),
            actions: vec![Action::Read, Action::Search],
            filter: Vec::new(),
        };
        let attributes = Attributes { roles: user.roles.clone(), organization: user.organization.clone() };
        // Labels as for the user's treatment requests: a chooser never names a patient whose
        // record the user's roles and clearance hide.
        let clearance = self.clearance(&user.roles, user.clearance, None, bastion_auth::purpose::DEFAULT);
        bastion_policy::AccessScope::compile(vec![everything], None)
            .with_rules(attributes, &self.rules)
            .with_clearance(clearance)
            .predicate(resource_type, Action::Search)
    }

    /// `user_reach`, narrowed by the patients' Consents as they stand now.
    async fn user_reach_now(
        &self,
        user: &super::User,
        resource_type: &str,
    ) -> Result<bastion_search::AccessPredicate, AuthError> {
        let reach = self.user_reach(user, resource_type);
        let Some(consents) = &self.consents else { return Ok(reach) };
        let who = crate::consents::Who {
            fhir_user: user.fhir_user.as_deref(),
            organization: user.organization.as_deref(),
            purpose: bastion_auth::purpose::DEFAULT,
        };
        let consent = consents
            .reading_predicate(&*self.store, &who)
            .await
            .map_err(|e| AuthError::KeyStore(format!("consents: {e}")))?;
        Ok(bastion_search::AccessPredicate::All(vec![reach, consent]).simplified())
    }

    /// The patients the chooser offers `user`: `(id, "Family, Given (id)")`.
    async fn patient_choices(&self, user: &super::User) -> Result<Vec<(String, String)>, AuthError> {
        let query =
            bastion_search::SearchQuery::parse("Patient", &[]).map_err(|e| AuthError::KeyStore(e.to_string()))?;
        let page = bastion_store::Page { offset: 0, limit: PATIENT_CHOICES, with_total: false };
        let reach = self.user_reach_now(user, "Patient").await?;
        let found = self.store.search(&reach, &query, page).await.map_err(store_error)?;
        Ok(found
            .items
            .iter()
            .map(|v| {
                let body: serde_json::Value =
                    v.body.as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
                let name = &body["name"][0];
                let given = name["given"].as_array().and_then(|g| g.first()).and_then(|g| g.as_str()).unwrap_or("");
                let label = match (name["family"].as_str(), given) {
                    (Some(f), "") => format!("{f} ({})", v.id),
                    (Some(f), g) => format!("{f}, {g} ({})", v.id),
                    (None, _) => v.id.clone(),
                };
                (v.id.clone(), label)
            })
            .collect())
    }

    /// Does the record exist, and may `user` reach it under the deployment's rules? (A
    /// record outside their reach is answered as missing.)
    async fn visible_to(&self, user: &super::User, resource_type: &str, id: &str) -> Result<bool, AuthError> {
        let reach = self.user_reach_now(user, resource_type).await?;
        let found = self.store.read(&reach, resource_type, id).await.map_err(store_error)?;
        Ok(found.is_some_and(|v| !v.is_deleted()))
    }
}

fn describe(r: &bastion_auth::ResourceScope) -> String {
    let what = match &r.resource_type {
        bastion_auth::TypeSel::Any => "all kinds of records".to_string(),
        bastion_auth::TypeSel::Named(t) => t.clone(),
    };
    let whose = match r.context {
        ScopeContext::Patient => "of the chosen patient",
        ScopeContext::User => "that you may see",
        ScopeContext::System => "of the system",
    };
    let p = r.perms.letters();
    let mut verbs = Vec::new();
    for (c, v) in [('c', "create"), ('r', "read"), ('u', "update"), ('d', "delete"), ('s', "search")] {
        if p.contains(c) {
            verbs.push(v);
        }
    }
    format!("{}: {what} {whose}", verbs.join(", "))
}

/// A 400 page: the flow cannot go on from here.
fn bad_page(message: &str) -> Response {
    html_response(StatusCode::BAD_REQUEST, pages::error("Cannot continue", message), &[])
}

fn server_error_page() -> Response {
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::error("Something went wrong", "The server could not complete the request. Try again later."),
        &[],
    )
}

/// `GET|POST /auth/authorize`.
pub async fn authorize(State(auth): State<Arc<AuthService>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let raw = if parts.method == Method::POST {
        let is_form = super::is_form(&parts.headers);
        match axum::body::to_bytes(body, 64 * 1024).await {
            Ok(b) if is_form => b.to_vec(),
            _ => return fail(Failure::Page(StatusCode::BAD_REQUEST, "The request must be a form of at most 64 KiB.")),
        }
    } else {
        parts.uri.query().unwrap_or("").as_bytes().to_vec()
    };
    let Some(params) = single_params(&raw) else {
        return fail(Failure::Page(StatusCode::BAD_REQUEST, "A parameter is repeated."));
    };
    let checked = match auth.check_authorization(&params).await {
        Ok(r) => r,
        Err(f) => return fail(f),
    };
    let browser = random_token();
    let csrf = random_token();
    let pending = Pending {
        request: checked.clone(),
        browser: digest(&browser),
        csrf: csrf.clone(),
        user: None,
        offered: Vec::new(),
        choose_patient: false,
    };
    let id = match auth.put_pending("login", &pending).await {
        Ok(id) => id,
        Err(_) => return server_error_page(),
    };
    let mut r = html_response(StatusCode::OK, pages::login(auth.client_name(&checked), &id, &csrf, None), &[]);
    r.headers_mut().insert(header::SET_COOKIE, auth.set_cookie(&browser));
    r
}

async fn read_form(request: Request) -> Result<(HeaderMap, Option<std::net::IpAddr>, Vec<(String, String)>), Response> {
    let address = client_address(&request);
    let (parts, body) = request.into_parts();
    let bad = || bad_page("The form is malformed.");
    if !super::is_form(&parts.headers) {
        return Err(bad());
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| bad())?;
    let fields = form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    Ok((parts.headers, address, fields))
}

/// Single-valued fields of a form (the last value wins for none: a repeat is refused).
fn singles(fields: &[(String, String)], multi: &[&str]) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (k, v) in fields.iter().filter(|(k, _)| !multi.contains(&k.as_str())) {
        if out.insert(k.clone(), v.clone()).is_some() {
            return None;
        }
    }
    Some(out)
}

/// `POST /auth/login`.
pub async fn login(State(auth): State<Arc<AuthService>>, request: Request) -> Response {
    let (headers, address, fields) = match read_form(request).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(form) = singles(&fields, &[]) else {
        return bad_page("A field is repeated.");
    };
    let pending = match auth.pending_for("login", &form, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let username = form.get("username").map(|u| u.trim().to_string()).unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let mut keys = vec![Key::User(username.clone())];
    if let Some(a) = address {
        keys.push(Key::Address(a));
    }
    let client = auth.client_name(&pending.request).to_string();
    let request_id = form.get("request").cloned().unwrap_or_default();
    if let Err(wait) = auth.lockout.check(&keys, now()) {
        auth.record(SecurityEvent::LoginLocked { user: username.clone(), address });
        let mut r = html_response(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(&client, &request_id, &pending.csrf, Some("Too many failed sign-ins. Try again later.")),
            &[],
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        return r;
    }
    // Argon2 verification is slow on purpose: off the async workers.
    let user = auth.users.get(&username).cloned();
    let verified = match &user {
        Some(u) => {
            let phc = u.password.clone();
            tokio::task::spawn_blocking(move || bastion_auth::secret::verify_password(&password, &phc))
                .await
                .unwrap_or(false)
        }
        None => {
            // Same work for an unknown user, so timing does not tell which usernames exist.
            let phc = auth.dummy_password.clone();
            let _ = tokio::task::spawn_blocking(move || bastion_auth::secret::verify_password(&password, &phc)).await;
            false
        }
    };
    let Some(user) = user.filter(|_| verified) else {
        auth.lockout.record_failure(&keys, now());
        auth.record(SecurityEvent::LoginFailed { user: username.clone(), client: client.clone(), address });
        return html_response(
            StatusCode::UNAUTHORIZED,
            pages::login(&client, &request_id, &pending.csrf, Some("The username or password is wrong.")),
            &[],
        );
    };
    auth.lockout.record_success(&user.username);
    // An EHR launch belongs to the user who registered it.
    let request = pending.request;
    if let Some(l) = &request.launch
        && l.user != user.username
    {
        return fail(Failure::Redirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            error: "access_denied",
            description: "the launch was registered by another user",
        });
    }
    if bastion_auth::purpose::grant(request.purpose_of_use.as_deref(), &user.purposes, user.break_glass).is_err() {
        return fail(Failure::Redirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            error: "access_denied",
            description: "this user may not assert the requested purpose of use",
        });
    }
    if let Err(page) = auth.use_pending("login", &form).await {
        return page;
    }
    auth.record(SecurityEvent::LoginSucceeded {
        user: user.username.clone(),
        client: request.client_id.clone(),
        address,
    });
    let choices = auth.consent_choices(&request, &user);
    let grantable = auth.grantable(&request.scope, &request.client_id, &user, request.launch.is_some());
    let launch_patient = request.launch.as_ref().and_then(|l| l.patient.clone());
    let wants_patient = grantable.iter().any(|s| {
        matches!(s, Scope::LaunchPatient) || matches!(s, Scope::Resource(r) if r.context == ScopeContext::Patient)
    });
    let choose_patient = wants_patient && launch_patient.is_none() && user.own_patient().is_none();
    let patients = if choose_patient {
        match auth.patient_choices(&user).await {
            Ok(p) => Some(p),
            Err(_) => return server_error_page(),
        }
    } else {
        None
    };
    let csrf = random_token();
    let offered: Vec<String> = choices.iter().map(|c| c.scope.clone()).collect();
    let next = Pending {
        browser: digest(&cookie_value(&headers).unwrap_or_default()),
        csrf: csrf.clone(),
        user: Some(user.username.clone()),
        offered,
        choose_patient,
        request: request.clone(),
    };
    let id = match auth.put_pending("consent", &next).await {
        Ok(id) => id,
        Err(_) => return server_error_page(),
    };
    let offline = grantable.contains(&Scope::OfflineAccess);
    let html = pages::consent(&ConsentPage {
        client: &request.client_id,
        user: &user.username,
        request: &id,
        csrf: &csrf,
        choices,
        patients,
        offline,
    });
    let app = origin_of(&request.redirect_uri).into_iter().collect::<Vec<_>>();
    html_response(StatusCode::OK, html, &app)
}

/// `POST /auth/consent`.
pub async fn consent(State(auth): State<Arc<AuthService>>, request: Request) -> Response {
    let (headers, _, fields) = match read_form(request).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(form) = singles(&fields, &["scope"]) else {
        return bad_page("A field is repeated.");
    };
    let pending = match auth.pending_for("consent", &form, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Err(page) = auth.use_pending("consent", &form).await {
        return page;
    }
    let request = pending.request;
    let back = |error, description| {
        fail(Failure::Redirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            error,
            description,
        })
    };
    if form.get("decision").map(String::as_str) != Some("approve") {
        auth.record(SecurityEvent::ConsentDenied {
            user: pending.user.clone().unwrap_or_default(),
            client: request.client_id.clone(),
        });
        return back("access_denied", "the user denied access");
    }
    let Some(user) = pending.user.as_ref().and_then(|u| auth.users.get(u)).cloned() else {
        return back("access_denied", "the user is no longer registered");
    };
    // Only what was offered counts; anything else in the form is ignored.
    let chosen: Vec<&str> =
        fields.iter().filter(|(k, v)| k == "scope" && pending.offered.contains(v)).map(|(_, v)| v.as_str()).collect();
    let mut scope = auth.grantable(&chosen.join(" "), &request.client_id, &user, request.launch.is_some());
    // The patient in context: the EHR's, the user's own record, or the one chosen here.
    let patient = match (&request.launch, user.own_patient()) {
        (Some(l), _) if l.patient.is_some() => l.patient.clone(),
        (_, Some(own)) => Some(own),
        _ if pending.choose_patient => match form.get("patient").filter(|p| !p.is_empty()) {
            Some(p) => match auth.visible_to(&user, "Patient", p).await {
                Ok(true) => Some(p.clone()),
                Ok(false) => return back("invalid_request", "the chosen patient does not exist"),
                Err(_) => return back("server_error", "the server could not complete the request"),
            },
            None => None,
        },
        _ => None,
    };
    if patient.is_none() {
        // Never a patient/ scope without a patient: that would be no restriction at all.
        let mut narrowed = ScopeSet::default();
        for s in scope.iter().filter(|s| {
            !matches!(s, Scope::LaunchPatient) && !matches!(s, Scope::Resource(r) if r.context == ScopeContext::Patient)
        }) {
            narrowed.insert(s.clone());
        }
        scope = narrowed;
    }
    if !scope.iter().any(|s| matches!(s, Scope::Resource(_))) {
        return back("invalid_scope", "no access to data was granted");
    }
    let Ok(purpose_of_use) =
        bastion_auth::purpose::grant(request.purpose_of_use.as_deref(), &user.purposes, user.break_glass)
    else {
        return back("access_denied", "this user may not assert the requested purpose of use");
    };
    let code = random_token();
    let now = now();
    let grant = CodeGrant {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        nonce: request.nonce.clone(),
        user: user.username.clone(),
        scope: scope.to_string(),
        patient,
        encounter: request.launch.as_ref().and_then(|l| l.encounter.clone()),
        family: uuid::Uuid::new_v4().to_string(),
        ehr_launch: request.launch.is_some(),
        purpose_of_use,
    };
    let stored = Grant {
        id: digest(&code),
        kind: "code",
        payload: match serde_json::to_string(&grant) {
            Ok(p) => p,
            Err(_) => return server_error_page(),
        },
        valid_until: now + CODE_TTL_SECS,
        // Kept as long as the tokens it produced can live, so a replay can still revoke them.
        keep_until: now + auth.refresh_ttl,
    };
    let put = async {
        let mut tx = auth.store.begin().await.map_err(store_error)?;
        tx.put_grant(&stored, now).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    };
    if put.await.is_err() {
        return back("server_error", "the server could not complete the request");
    }
    auth.record(SecurityEvent::ConsentApproved {
        user: user.username.clone(),
        client: request.client_id.clone(),
        scope: grant.scope.clone(),
    });
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = request.state.as_deref() {
        params.push(("state", s));
    }
    redirect_to(&request.redirect_uri, &params)
}

/// The body of `POST /auth/launch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchRequest {
    patient: Option<String>,
    encounter: Option<String>,
}

/// `POST /auth/launch`: an EHR front end, holding a user's token, registers the patient and
/// encounter an app is to be launched into.
pub async fn launch(State(auth): State<Arc<AuthService>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let error = |status: StatusCode, code: &str, description: &str| {
        let mut r = (status, axum::Json(json!({"error": code, "error_description": description}))).into_response();
        super::no_store(r.headers_mut());
        r
    };
    let principal = match super::bearer_token(&headers) {
        Some(t) => match auth.authenticate(t).await {
            Ok(p) => p,
            Err(e) => {
                auth.record(SecurityEvent::BearerRefused { check: e.to_string() });
                return error(StatusCode::UNAUTHORIZED, "invalid_token", "a valid user token is required");
            }
        },
        None => return error(StatusCode::UNAUTHORIZED, "invalid_token", "a valid user token is required"),
    };
    let Some((user, launcher)) = principal.user.clone().and_then(|u| auth.users.get(&u).map(|l| (u, l))) else {
        return error(StatusCode::FORBIDDEN, "insufficient_scope", "only a signed-in user can launch an app");
    };
    let Ok(req) = serde_json::from_slice::<LaunchRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be {\"patient\": ..., \"encounter\": ...}",
        );
    };
    for (t, id) in [("Patient", &req.patient), ("Encounter", &req.encounter)] {
        if let Some(id) = id {
            match auth.visible_to(launcher, t, id).await {
                Ok(true) => {}
                Ok(false) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the launch context names a record that does not exist",
                    );
                }
                Err(_) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the server could not complete the request",
                    );
                }
            }
        }
    }
    let context = LaunchContext { user, patient: req.patient, encounter: req.encounter };
    let id = random_token();
    let now = now();
    let grant = Grant {
        id: digest(&id),
        kind: "launch",
        payload: serde_json::to_string(&context).unwrap_or_default(),
        valid_until: now + LAUNCH_TTL_SECS,
        keep_until: now + LAUNCH_TTL_SECS,
    };
    let put = async {
        let mut tx = auth.store.begin().await.map_err(store_error)?;
        tx.put_grant(&grant, now).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    };
    if put.await.is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the server could not complete the request");
    }
    auth.record(SecurityEvent::LaunchRegistered {
        user: context.user.clone(),
        patient: context.patient.clone(),
        encounter: context.encounter.clone(),
    });
    super::json_reply(json!({"launch": id}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_of_urls() {
        assert_eq!(origin_of("http://localhost:9000/callback?x=1").as_deref(), Some("http://localhost:9000"));
        assert_eq!(origin_of("https://app.example/").as_deref(), Some("https://app.example"));
        assert_eq!(origin_of("not a url"), None);
    }

    #[test]
    fn redirect_keeps_an_existing_query() {
        let r = redirect_to("http://app/cb?x=1", &[("code", "a b"), ("state", "s&t")]);
        assert_eq!(r.headers()[header::LOCATION], "http://app/cb?x=1&code=a+b&state=s%26t");
    }

    #[test]
    fn repeated_authorize_parameter_is_refused() {
        assert!(single_params(b"scope=a&scope=b").is_none());
        assert_eq!(single_params(b"scope=a+b").unwrap()["scope"], "a b");
    }
}
