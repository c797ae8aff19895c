//! The authorization server's HTTP side and the resource server's token check.
//!
//! What is here: the registered clients (from `[[clients]]`) and users (`[[users]]`), client
//! authentication (`client_secret_basic`, `client_secret_post`, `private_key_jwt`), the token
//! endpoint (`authorization_code` with PKCE, `refresh_token` with rotation, and
//! `client_credentials`), RFC 7662 introspection, RFC 7009 revocation, the JWKS and both
//! discovery documents, and [`AuthService::authenticate`], which turns a bearer token into a
//! [`Principal`] for the layers below. The browser side of the code flow (login and consent
//! pages, EHR launch) is in [`authorize`]. Codes, replayed assertion `jti`s, used refresh
//! tokens and revocations live in the store, so that every node on one database sees them at
//! once.
//!
//! Not here yet: external issuers (`[[trusted_issuers]]`) and `jwks_uri` clients, which are
//! refused at start. The discovery documents advertise only what is here.
//!
//! Nothing secret is logged: not tokens, assertions, secrets or the reason a client failed
//! beyond the check's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bastion_auth::assertion::{JWT_BEARER, PublicKeys, verify_client_assertion};
use bastion_auth::keys::SigningKey;
use bastion_auth::token::{AccessClaims, LEEWAY_SECS, TokenIssuer};
use bastion_auth::{AuthError, Ceiling, ScopeSet, secret};
use bastion_fhir::labels::Confidentiality;
use bastion_store::Store;
use serde_json::{Value, json};

use crate::config::{ClientConfig, Config, UserConfig};

mod authorize;
pub mod events;
mod lockout;
mod pages;
mod remote_jwks;
mod trusted;

pub use authorize::{authorize, consent, launch, login};
use events::{Grant, SecurityEvent, SecurityEventSink};

/// Who is calling, as the layers below see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user, or for a backend client the client itself.
    pub subject: String,
    pub client_id: String,
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    /// The granted scopes.
    pub scopes: ScopeSet,
    pub token_id: String,
    /// The roles (`[[roles]]` names) of the user or backend client; none for external tokens.
    pub roles: Vec<String>,
    /// The organization the user or backend client acts within (`Organization/[id]`).
    pub organization: Option<String>,
    /// The purpose of use the token was granted (v3-ActReason; `TREAT` by default).
    pub purpose_of_use: String,
    /// The signed-in user (`[[users]]` username) for tokens from the authorization-code flow;
    /// `None` for a backend client acting for itself.
    pub user: Option<String>,
    /// What it may do, compiled once per token (see [`AuthService::authenticate`]).
    pub access: Arc<bastion_policy::AccessScope>,
    /// What it would reach under break the glass, for a user allowed to break it who has not,
    /// where the deployment tells such users that something was withheld.
    pub break_glass_access: Option<Arc<bastion_policy::AccessScope>>,
}

/// What a caller may do, for the policy layer: its resource scopes as permissions, its
/// patient context, and the deployment's rules for a caller with its attributes.
fn access_scope(
    scopes: &ScopeSet,
    patient: Option<&String>,
    attributes: bastion_policy::Attributes,
    rules: &[bastion_policy::Rule],
) -> bastion_policy::AccessScope {
    use bastion_policy::{Action, Context, Permission};
    let permissions = scopes
        .resource_scopes()
        .map(|r| Permission {
            context: match r.context {
                bastion_auth::ScopeContext::Patient => Context::Patient,
                bastion_auth::ScopeContext::User => Context::User,
                bastion_auth::ScopeContext::System => Context::System,
            },
            resource_type: match &r.resource_type {
                bastion_auth::TypeSel::Any => None,
                bastion_auth::TypeSel::Named(t) => Some(t.clone()),
            },
            actions: r
                .perms
                .letters()
                .chars()
                .filter_map(|c| match c {
                    'c' => Some(Action::Create),
                    'r' => Some(Action::Read),
                    'u' => Some(Action::Update),
                    'd' => Some(Action::Delete),
                    's' => Some(Action::Search),
                    _ => None,
                })
                .collect(),
            filter: r.filter.clone(),
        })
        .collect();
    bastion_policy::AccessScope::compile(permissions, patient.cloned()).with_rules(attributes, rules)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Public,
    Confidential,
    Backend,
}

/// How a client proves who it is.
enum Credentials {
    None,
    Secret(String),
    Keys(PublicKeys),
    /// Keys published at the client's `jwks_uri`.
    RemoteKeys(remote_jwks::RemoteJwks),
}

struct Client {
    id: String,
    kind: ClientKind,
    redirect_uris: Vec<String>,
    credentials: Credentials,
    /// The most this client may be granted.
    scopes: ScopeSet,
    /// The union of its roles' permissions, when it has roles.
    role_permissions: Option<ScopeSet>,
    roles: Vec<String>,
    organization: Option<String>,
    /// Purposes of use it may assert for itself (backend).
    purposes: Vec<String>,
    /// Its `clearance`: a backend client's own (N when unset), and the cap on what the users
    /// of any client see.
    clearance: Option<Confidentiality>,
}

/// Why the start-up configuration of clients is unusable.
#[derive(Debug, thiserror::Error)]
#[error("client {client}: {reason}")]
pub struct ClientConfigError {
    client: String,
    reason: String,
}

fn client_from_config(c: &ClientConfig, config: &Config, http: &reqwest::Client) -> Result<Client, ClientConfigError> {
    let err = |reason: &str| ClientConfigError { client: c.id.clone(), reason: reason.into() };
    let kind = match c.kind.as_str() {
        "public" => ClientKind::Public,
        "confidential" => ClientKind::Confidential,
        "backend" => ClientKind::Backend,
        _ => return Err(err("kind must be public, confidential or backend")),
    };
    for uri in &c.redirect_uris {
        check_redirect_uri(uri).map_err(|reason| err(&format!("redirect_uri {uri}: {reason}")))?;
    }
    if kind == ClientKind::Backend && !c.redirect_uris.is_empty() {
        return Err(err("a backend client has no redirect_uris"));
    }
    let credentials = match (kind, &c.secret, &c.jwks, &c.jwks_uri) {
        (ClientKind::Public, None, None, None) => Credentials::None,
        (ClientKind::Public, _, _, _) => return Err(err("a public client has neither a secret nor keys")),
        (_, _, Some(_), Some(_)) => return Err(err("give either jwks or jwks_uri, not both")),
        (_, Some(_), _, Some(_)) => return Err(err("give either a secret or jwks_uri, not both")),
        (_, None, None, Some(uri)) => {
            check_secure_url(uri).map_err(|reason| err(&format!("jwks_uri {uri}: {reason}")))?;
            Credentials::RemoteKeys(remote_jwks::RemoteJwks::new(
                uri.clone(),
                bastion_auth::assertion::KeyProfile::ClientAssertion,
                http.clone(),
            ))
        }
        (_, secret, jwks, None) => credentials_inline(kind, secret, jwks).map_err(&err)?,
    };

    let (scopes, bad) = ScopeSet::parse(&c.scopes);
    if let Some(e) = bad.first() {
        return Err(err(&e.to_string()));
    }
    let role_permissions =
        if c.roles.is_empty() { None } else { Some(role_permissions(&c.roles, config).map_err(|r| err(&r))?) };
    Ok(Client {
        id: c.id.clone(),
        kind,
        redirect_uris: c.redirect_uris.clone(),
        credentials,
        scopes,
        role_permissions,
        roles: c.roles.clone(),
        organization: checked_organization(&c.organization).map_err(err)?,
        purposes: c.purposes.clone(),
        clearance: c.clearance.as_deref().map(checked_clearance).transpose().map_err(err)?,
    })
}

/// A `clearance` key: one of the confidentiality codes `U L M N R V`.
fn checked_clearance(code: &str) -> Result<Confidentiality, &'static str> {
    Confidentiality::parse(code).ok_or("clearance must be one of U, L, M, N, R, V")
}

/// Credentials given inline: a secret for a confidential client, or public keys.
fn credentials_inline(
    kind: ClientKind,
    secret: &Option<String>,
    jwks: &Option<String>,
) -> Result<Credentials, &'static str> {
    match (kind, secret, jwks) {
        (_, Some(_), Some(_)) => Err("give either a secret or jwks, not both"),
        (ClientKind::Confidential, Some(s), None) => {
            if s.len() < 16 {
                return Err("the secret must be at least 16 characters");
            }
            Ok(Credentials::Secret(s.clone()))
        }
        (_, None, Some(jwks)) => {
            PublicKeys::from_jwks(jwks).map(Credentials::Keys).map_err(|_| "jwks is not a usable JWKS")
        }
        (ClientKind::Backend, Some(_), None) => {
            Err("a backend client authenticates with a signed assertion: give `jwks`")
        }
        _ => Err("a confidential or backend client needs a secret, jwks or jwks_uri"),
    }
}

/// The union of the named roles' permissions.
fn role_permissions(roles: &[String], config: &Config) -> Result<ScopeSet, String> {
    let mut sets = Vec::new();
    for name in roles {
        let role =
            config.roles.iter().find(|r| &r.name == name).ok_or_else(|| format!("names an unknown role {name}"))?;
        let (set, bad) = ScopeSet::parse(&role.permissions.join(" "));
        if let Some(e) = bad.first() {
            return Err(format!("role {}: {e}", role.name));
        }
        sets.push(set);
    }
    Ok(ScopeSet::union(&sets))
}

/// A registered redirect URI: absolute, no fragment, and `https` unless it is on loopback
/// (RFC 9700 §2.1: plain http only for native apps on the same machine).
fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.contains('#') {
        return Err("a redirect URI has no fragment");
    }
    check_secure_url(uri)
}

/// A URL the server sends users to or fetches keys from: `https`, or plain `http` only on a
/// loopback address (development, native apps).
fn check_secure_url(uri: &str) -> Result<(), &'static str> {
    let host_of = |rest: &str| rest.split(['/', '?', '#']).next().unwrap_or("").to_string();
    if let Some(rest) = uri.strip_prefix("https://") {
        return if host_of(rest).is_empty() { Err("no host") } else { Ok(()) };
    }
    if let Some(rest) = uri.strip_prefix("http://") {
        let host = host_of(rest);
        let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
        return if matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
            Ok(())
        } else {
            Err("plain http is allowed only on localhost, 127.0.0.1 or [::1]")
        };
    }
    Err("must be an https:// URL (or http:// on loopback)")
}

/// What a `[[roles]]` entry grants of labelled data.
#[derive(Debug, Clone)]
struct RoleLabels {
    sensitivity: Vec<String>,
    label_admin: bool,
}

/// A registered user, as the authorization server needs it.
#[derive(Debug, Clone)]
pub(crate) struct User {
    username: String,
    /// Argon2id PHC string.
    password: String,
    fhir_user: Option<String>,
    /// The union of the user's role permissions: the most any of their tokens may carry.
    role_permissions: ScopeSet,
    roles: Vec<String>,
    organization: Option<String>,
    purposes: Vec<String>,
    break_glass: bool,
    /// The highest confidentiality the user sees (N when unset).
    clearance: Confidentiality,
}

impl User {
    /// A patient signing in for themself: their own Patient id.
    fn own_patient(&self) -> Option<String> {
        self.fhir_user.as_deref().and_then(|f| f.strip_prefix("Patient/")).map(str::to_string)
    }
}

/// An `organization` key: `Organization/[id]`, as the server stamps it on writes.
fn checked_organization(o: &Option<String>) -> Result<Option<String>, &'static str> {
    match o {
        None => Ok(None),
        Some(o) if o.strip_prefix("Organization/").is_some_and(bastion_fhir::primitives::is_valid_id) => {
            Ok(Some(o.clone()))
        }
        Some(_) => Err("organization must be Organization/[id]"),
    }
}

fn user_from_config(u: &UserConfig, config: &Config) -> Result<User, String> {
    let err = |reason: String| format!("user {}: {reason}", u.username);
    if !u.password.starts_with("$argon2id$") {
        return Err(err("password must be an Argon2id PHC string (make one with `bastion hash-password`)".into()));
    }
    if let Some(f) = &u.fhir_user {
        let ok = f.split_once('/').is_some_and(|(t, id)| {
            matches!(t, "Patient" | "Practitioner" | "PractitionerRole" | "RelatedPerson" | "Person") && !id.is_empty()
        });
        if !ok {
            return Err(err(
                "fhir_user must be Patient/, Practitioner/, PractitionerRole/, RelatedPerson/ or Person/ and an id"
                    .into(),
            ));
        }
    }
    Ok(User {
        username: u.username.clone(),
        password: u.password.clone(),
        fhir_user: u.fhir_user.clone(),
        role_permissions: role_permissions(&u.roles, config).map_err(err)?,
        roles: u.roles.clone(),
        organization: checked_organization(&u.organization).map_err(|r| err(r.to_string()))?,
        purposes: u.purposes.clone(),
        break_glass: u.break_glass,
        clearance: u
            .clearance
            .as_deref()
            .map(checked_clearance)
            .transpose()
            .map_err(|r| err(r.to_string()))?
            .unwrap_or(Confidentiality::N),
    })
}

/// A hash of a password nobody has, verified for unknown usernames so that a failed sign-in
/// takes as long whether or not the user exists. Same parameters as `hash-password`.
const DUMMY_PASSWORD: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$hwX7hBytk0ASluBd11Y98g$mRUFADRGE++9eHRhACnIi2M9PPbfvrC9b74Xvxt3HH4";

/// Online-access refresh tokens last a working day; offline ones `auth.refresh_token_ttl_secs`.
const ONLINE_REFRESH_TTL_SECS: i64 = 12 * 3600;

/// A token already validated: its Principal (scopes parsed, access compiled) and what
/// revocation is checked against, which is still asked of the store on every request.
#[derive(Clone)]
struct Validated {
    principal: Arc<Principal>,
    exp: i64,
    /// The token's `jti` and its refresh family.
    revocation_ids: Vec<String>,
}

/// Tokens already validated, so a request pays one map lookup for the signature check, the
/// scope parse and the policy compile.
struct ValidationCache {
    entries: Mutex<HashMap<String, Validated>>,
}

const VALIDATION_CACHE_ENTRIES: usize = 10_000;

impl ValidationCache {
    fn get(&self, token: &str, now: i64) -> Option<Validated> {
        let map = self.entries.lock().ok()?;
        map.get(token).filter(|v| v.exp + LEEWAY_SECS >= now).cloned()
    }

    fn put(&self, token: &str, validated: &Validated) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= VALIDATION_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(token.to_string(), validated.clone());
        }
    }
}

pub struct AuthService {
    issuer: TokenIssuer,
    clients: HashMap<String, Client>,
    users: HashMap<String, User>,
    store: Arc<dyn Store>,
    public_url: String,
    fhir_base: String,
    access_ttl: i64,
    refresh_ttl: i64,
    cache: ValidationCache,
    lockout: lockout::Lockout,
    dummy_password: String,
    trusted: Vec<trusted::TrustedIssuer>,
    /// Attribute rules, checked at start.
    rules: Vec<bastion_policy::Rule>,
    /// The `[[roles]]` by name: for the roles external tokens name, and what each role
    /// grants of labelled data.
    roles: HashMap<String, RoleLabels>,
    label_policy: bastion_policy::LabelPolicy,
    /// `[privacy] hint_break_glass`.
    hint_break_glass: bool,
    /// The patients' Consents, so that the chooser and launch context offer only what the
    /// user's tokens will reach (the engine's, shared).
    consents: Option<Arc<crate::consents::ConsentEnforcer>>,
    events: Arc<dyn SecurityEventSink>,
}

/// A secret for a browser or client: 256 random bits, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness nothing secret can be made; the server cannot go on.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps of a secret: its SHA-256, hex.
fn digest(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// The launch context and grant behind a user's tokens.
struct UserGrant<'a> {
    user: &'a User,
    scope: ScopeSet,
    patient: Option<String>,
    encounter: Option<String>,
    family: String,
    nonce: Option<String>,
    ehr_launch: bool,
    purpose_of_use: String,
    grant: Grant,
}

/// The store failed underneath an auth decision: a server error, never a grant.
fn store_error(e: bastion_store::StoreError) -> AuthError {
    AuthError::KeyStore(e.to_string())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A token-endpoint style error: `{"error": ..., "error_description": ...}`.
fn oauth_error(e: &AuthError) -> Response {
    let (code, status) = e.oauth_error();
    let description = match code {
        "invalid_client" => "client authentication failed",
        "unsupported_grant_type" => "this grant type is not supported",
        "invalid_scope" => "none of the requested scopes can be granted",
        "unauthorized_client" => "this client may not use this grant",
        "server_error" => "the server could not complete the request",
        _ => "the request is malformed",
    };
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response();
    no_store(r.headers_mut());
    if status == 401 {
        // RFC 6749 §5.2: a failed client authentication names the scheme to use.
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"bastion\""));
    }
    r
}

pub(crate) fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

pub(crate) fn json_reply(value: Value) -> Response {
    let mut r = axum::Json(value).into_response();
    no_store(r.headers_mut());
    r
}

/// A public JSON document (discovery, JWKS, style); the CORS layer opens it to any origin.
fn public_json(value: Value) -> Response {
    axum::Json(value).into_response()
}

/// The token of an `Authorization: Bearer` header (the scheme is case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Form fields of a token, introspection or revocation request; a repeated field is an
/// error (RFC 6749 §3.1).
fn form(body: &[u8]) -> Result<HashMap<String, String>, AuthError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(AuthError::InvalidRequest("a parameter is repeated"));
        }
    }
    Ok(out)
}

pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

impl AuthService {
    pub fn new(config: &Config, public_url: &str, store: Arc<dyn Store>) -> Result<AuthService, String> {
        let key =
            SigningKey::load_or_create(std::path::Path::new(&config.server.data_dir)).map_err(|e| e.to_string())?;
        let public_url = public_url.trim_end_matches('/').to_string();
        let fhir_base = crate::fhir_base(&public_url);
        let issuer = TokenIssuer::new(Arc::new(key), format!("{public_url}/auth"), fhir_base.clone());
        // Outgoing requests (client JWKS): no redirects, so a key URL cannot be bounced elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let mut clients = HashMap::new();
        for c in &config.clients {
            let client = client_from_config(c, config, &http).map_err(|e| e.to_string())?;
            if clients.insert(c.id.clone(), client).is_some() {
                return Err(format!("client {} is registered twice", c.id));
            }
        }
        let mut users = HashMap::new();
        for u in &config.users {
            if users.insert(u.username.clone(), user_from_config(u, config)?).is_some() {
                return Err(format!("user {} is registered twice", u.username));
            }
        }
        let mut trusted = Vec::new();
        for t in &config.trusted_issuers {
            if t.issuer == issuer.issuer {
                return Err(format!("trusted issuer {}: that is this server's own issuer", t.issuer));
            }
            trusted.push(trusted::TrustedIssuer::from_config(t, &http)?);
        }
        Ok(AuthService {
            issuer,
            clients,
            users,
            store,
            public_url,
            fhir_base,
            access_ttl: config.auth.access_token_ttl_secs.max(1) as i64,
            refresh_ttl: config.auth.refresh_token_ttl_secs.max(60) as i64,
            cache: ValidationCache { entries: Mutex::new(HashMap::new()) },
            lockout: lockout::Lockout::new(config.limits.failed_logins_before_lockout),
            dummy_password: DUMMY_PASSWORD.to_string(),
            trusted,
            rules: config.rules.iter().map(|r| r.to_rule().map_err(|e| e.to_string())).collect::<Result<_, _>>()?,
            roles: config
                .roles
                .iter()
                .map(|r| {
                    (r.name.clone(), RoleLabels { sensitivity: r.sensitivity.clone(), label_admin: r.label_admin })
                })
                .collect(),
            label_policy: config.privacy.label_policy()?,
            hint_break_glass: config.privacy.hint_break_glass,
            consents: None,
            events: Arc::new(events::LogSink),
        })
    }

    /// Narrows the patient chooser and launch context by the patients' Consents.
    pub fn with_consents(mut self, consents: Arc<crate::consents::ConsentEnforcer>) -> AuthService {
        self.consents = Some(consents);
        self
    }

    /// Sends security events to `sink` instead of the log (the audit trail, tests).
    pub fn with_events(mut self, sink: Arc<dyn SecurityEventSink>) -> AuthService {
        self.events = sink;
        self
    }

    pub fn record(&self, event: SecurityEvent) {
        self.events.record(event);
    }

    fn token_endpoint(&self) -> String {
        format!("{}/auth/token", self.public_url)
    }

    /// Who the client is, by the credentials it presents. A public client only names itself.
    async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<(&Client, bool), AuthError> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .map(str::trim);
        let methods = [basic.is_some(), form.contains_key("client_secret"), form.contains_key("client_assertion")];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(AuthError::InvalidRequest("more than one client authentication method"));
        }
        if let Some(kind) = form.get("client_assertion_type") {
            if kind != JWT_BEARER {
                return Err(AuthError::InvalidRequest("client_assertion_type"));
            }
            let assertion = form.get("client_assertion").ok_or(AuthError::InvalidRequest("client_assertion"))?;
            // The client is named by the form or, as RFC 7523 allows, by the assertion's
            // issuer; either way the assertion is then verified against that client's keys.
            let named = match form.get("client_id") {
                Some(id) => id.clone(),
                None => jsonwebtoken::dangerous::insecure_decode_claims::<Value>(assertion)
                    .ok()
                    .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_string))
                    .ok_or(AuthError::Malformed)?,
            };
            let client = self.clients.get(&named).ok_or(AuthError::UnknownClient)?;
            let now = now();
            let verified = match &client.credentials {
                Credentials::Keys(keys) => {
                    verify_client_assertion(assertion, &client.id, keys, None, &self.token_endpoint(), now)?
                }
                Credentials::RemoteKeys(remote) => {
                    let kid = jsonwebtoken::decode_header(assertion).map_err(|_| AuthError::Malformed)?.kid;
                    let keys = remote.keys(kid.as_deref(), now).await?;
                    verify_client_assertion(
                        assertion,
                        &client.id,
                        &keys,
                        Some(&remote.url),
                        &self.token_endpoint(),
                        now,
                    )?
                }
                _ => return Err(AuthError::UnauthorizedClient),
            };
            let mut tx = self.store.begin().await.map_err(store_error)?;
            let fresh = tx
                .remember_jti(&client.id, &verified.jti, verified.exp + LEEWAY_SECS, now)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            if !fresh {
                return Err(AuthError::ReplayedJti);
            }
            return Ok((client, true));
        }
        if form.contains_key("client_assertion") {
            return Err(AuthError::InvalidRequest("client_assertion_type"));
        }
        let (id, presented) = match basic {
            Some(b) => {
                let decoded = base64::engine::general_purpose::STANDARD.decode(b).map_err(|_| AuthError::Malformed)?;
                let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
                let (id, secret) = text.split_once(':').ok_or(AuthError::Malformed)?;
                // RFC 6749 §2.3.1: both parts are form-encoded.
                let dec = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
                };
                (dec(id), Some(dec(secret)))
            }
            None => {
                let id = form.get("client_id").ok_or(AuthError::InvalidRequest("client_id"))?;
                (id.clone(), form.get("client_secret").cloned())
            }
        };
        let client = self.clients.get(&id).ok_or(AuthError::UnknownClient)?;
        match (&client.credentials, presented) {
            (Credentials::Secret(expected), Some(p)) if secret::secret_matches(&p, expected) => Ok((client, true)),
            (Credentials::Secret(_), _) => Err(AuthError::BadClientCredentials),
            (Credentials::None, None) => Ok((client, false)),
            (Credentials::None, Some(_)) => Err(AuthError::BadClientCredentials),
            // A client with keys must sign an assertion: anything else is failed authentication.
            (Credentials::Keys(_) | Credentials::RemoteKeys(_), _) => Err(AuthError::BadClientCredentials),
        }
    }

    async fn client_credentials(&self, client: &Client, form: &HashMap<String, String>) -> Result<Value, AuthError> {
        if client.kind == ClientKind::Public {
            return Err(AuthError::UnauthorizedClient);
        }
        let requested = form.get("scope").ok_or(AuthError::InvalidRequest("scope"))?;
        let (requested, _malformed) = ScopeSet::parse(requested);
        let mut ceilings = vec![Ceiling { scopes: &client.scopes, resource_only: false }];
        if let Some(roles) = &client.role_permissions {
            ceilings.push(Ceiling { scopes: roles, resource_only: true });
        }
        let granted = ScopeSet::grant(&requested, &ceilings);
        // A client without a user acts in the system context only.
        let mut scopes = ScopeSet::default();
        for s in granted.iter().filter(
            |s| matches!(s, bastion_auth::Scope::Resource(r) if r.context == bastion_auth::ScopeContext::System),
        ) {
            scopes.insert(s.clone());
        }
        if scopes.is_empty() {
            return Err(AuthError::InvalidScope);
        }
        let purpose =
            bastion_auth::purpose::grant(form.get("purpose_of_use").map(String::as_str), &client.purposes, false)
                .map_err(|_| AuthError::InvalidRequest("purpose_of_use is not allowed for this client"))?;
        let now = now();
        let claims = AccessClaims {
            iss: self.issuer.issuer.clone(),
            sub: client.id.clone(),
            aud: self.fhir_base.clone(),
            exp: now + self.access_ttl,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: client.id.clone(),
            scope: scopes.to_string(),
            patient: None,
            encounter: None,
            fhir_user: None,
            purpose_of_use: Some(purpose),
            family: None,
            roles: None,
            organization: None,
            clearance: None,
        };
        let token = self.issuer.issue(&claims)?;
        self.record(SecurityEvent::TokenIssued {
            grant: Grant::ClientCredentials,
            client: client.id.clone(),
            user: None,
            token_id: claims.jti.clone(),
            scope: claims.scope.clone(),
            purpose: claims.purpose_of_use.clone().unwrap_or_default(),
        });
        Ok(json!({"access_token": token, "token_type": "Bearer", "expires_in": self.access_ttl, "scope": claims.scope}))
    }

    /// `grant_type=authorization_code`: the code (once), the client it was issued to, the same
    /// `redirect_uri`, and the PKCE verifier. A second use of a code revokes every token the
    /// first use produced (RFC 6749 §4.1.2).
    async fn authorization_code(&self, client: &Client, form: &HashMap<String, String>) -> Result<Value, AuthError> {
        if client.kind == ClientKind::Backend {
            return Err(AuthError::UnauthorizedClient);
        }
        let code = form.get("code").filter(|c| !c.is_empty()).ok_or(AuthError::InvalidRequest("code"))?;
        let now = now();
        let mut tx = self.store.begin().await.map_err(store_error)?;
        let used = tx.use_grant("code", &digest(code), now).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let grant: authorize::CodeGrant = match used {
            bastion_store::GrantUse::First(p) => {
                serde_json::from_str(&p).map_err(|e| AuthError::KeyStore(e.to_string()))?
            }
            bastion_store::GrantUse::Again(p) => {
                if let Ok(g) = serde_json::from_str::<authorize::CodeGrant>(&p) {
                    self.revoke_family(&g.family).await?;
                    self.record(SecurityEvent::CodeReplayed { client: client.id.clone(), user: g.user });
                }
                return Err(AuthError::InvalidGrant("the code was used before"));
            }
            bastion_store::GrantUse::Unknown => {
                return Err(AuthError::InvalidGrant("the code is unknown or has expired"));
            }
        };
        if grant.client_id != client.id {
            return Err(AuthError::InvalidGrant("the code was issued to another client"));
        }
        if form.get("redirect_uri") != Some(&grant.redirect_uri) {
            return Err(AuthError::InvalidGrant("redirect_uri differs from the authorization request"));
        }
        bastion_auth::pkce::verify(form.get("code_verifier").map(String::as_str), &grant.code_challenge)?;
        let user = self.users.get(&grant.user).ok_or(AuthError::InvalidGrant("the user is no longer registered"))?;
        let (scope, _) = ScopeSet::parse(&grant.scope);
        self.user_tokens(
            client,
            UserGrant {
                user,
                scope,
                patient: grant.patient,
                encounter: grant.encounter,
                family: grant.family,
                nonce: grant.nonce,
                ehr_launch: grant.ehr_launch,
                purpose_of_use: grant.purpose_of_use,
                grant: Grant::AuthorizationCode,
            },
        )
    }

    /// `grant_type=refresh_token`: the refresh token of this client, not revoked, not used
    /// before (rotation: each use returns a new one and retires the old; a retired one
    /// presented again revokes the whole family), and a `scope` no wider than the original
    /// grant. The grant is narrowed again by the client's and the user's current ceilings.
    async fn refresh(&self, client: &Client, form: &HashMap<String, String>) -> Result<Value, AuthError> {
        let token = form.get("refresh_token").ok_or(AuthError::InvalidRequest("refresh_token"))?;
        let now = now();
        let claims = self
            .issuer
            .verify_refresh(token, &self.token_endpoint(), now)
            .map_err(|_| AuthError::InvalidGrant("the refresh token is not valid"))?;
        if claims.client_id != client.id {
            return Err(AuthError::InvalidGrant("the refresh token was issued to another client"));
        }
        if self.store.any_revoked(&[claims.jti.clone(), claims.family.clone()]).await.map_err(store_error)? {
            return Err(AuthError::InvalidGrant("the refresh token has been revoked"));
        }
        let mut tx = self.store.begin().await.map_err(store_error)?;
        let fresh = tx
            .remember_jti(&format!("refresh:{}", client.id), &claims.jti, claims.exp + LEEWAY_SECS, now)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        if !fresh {
            self.revoke_family(&claims.family).await?;
            self.record(SecurityEvent::RefreshReplayed { client: client.id.clone(), user: claims.sub.clone() });
            return Err(AuthError::InvalidGrant("the refresh token was used before"));
        }
        let (original, _) = ScopeSet::parse(&claims.scope);
        let requested = match form.get("scope") {
            None => original.clone(),
            Some(s) => {
                let (requested, malformed) = ScopeSet::parse(s);
                let within = ScopeSet::grant(&requested, &[Ceiling { scopes: &original, resource_only: false }]);
                if !malformed.is_empty() || requested.iter().any(|r| !within.contains(r)) {
                    return Err(AuthError::InvalidScope);
                }
                requested
            }
        };
        let user = self.users.get(&claims.sub).ok_or(AuthError::InvalidGrant("the user is no longer registered"))?;
        let ehr_launch = original.contains(&bastion_auth::Scope::Launch);
        // The user may have lost the right to this purpose since.
        let purpose_of_use =
            bastion_auth::purpose::grant(claims.purpose_of_use.as_deref(), &user.purposes, user.break_glass)
                .map_err(|_| AuthError::InvalidGrant("the purpose of use is no longer allowed"))?;
        let scope = self.grantable(&requested.to_string(), &client.id, user, ehr_launch);
        if scope.is_empty() {
            return Err(AuthError::InvalidScope);
        }
        self.user_tokens(
            client,
            UserGrant {
                user,
                scope,
                patient: claims.patient,
                encounter: claims.encounter,
                family: claims.family,
                nonce: None,
                ehr_launch,
                purpose_of_use,
                grant: Grant::RefreshToken,
            },
        )
    }

    /// The token response for a user: access token, refresh token (with `offline_access` or
    /// `online_access`), id token (with `openid`), and the launch context.
    fn user_tokens(&self, client: &Client, g: UserGrant<'_>) -> Result<Value, AuthError> {
        let now = now();
        let scope = g.scope.to_string();
        let fhir_user = g.user.fhir_user.clone().filter(|_| g.scope.contains(&bastion_auth::Scope::FhirUser));
        let claims = AccessClaims {
            iss: self.issuer.issuer.clone(),
            sub: g.user.username.clone(),
            aud: self.fhir_base.clone(),
            exp: now + self.access_ttl,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: client.id.clone(),
            scope: scope.clone(),
            patient: g.patient.clone(),
            encounter: g.encounter.clone(),
            fhir_user: g.user.fhir_user.clone(),
            purpose_of_use: Some(g.purpose_of_use.clone()),
            family: Some(g.family.clone()),
            roles: None,
            organization: None,
            clearance: None,
        };
        let mut out = json!({
            "access_token": self.issuer.issue(&claims)?,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "scope": scope,
            "need_patient_banner": !g.ehr_launch,
            "smart_style_url": format!("{}/auth/smart-style.json", self.public_url),
        });
        if let Some(p) = &g.patient {
            out["patient"] = json!(p);
        }
        if let Some(e) = &g.encounter {
            out["encounter"] = json!(e);
            out["fhirContext"] = json!([{"reference": format!("Encounter/{e}")}]);
        }
        let refresh_ttl = if g.scope.contains(&bastion_auth::Scope::OfflineAccess) {
            Some(self.refresh_ttl)
        } else if g.scope.contains(&bastion_auth::Scope::OnlineAccess) {
            Some(ONLINE_REFRESH_TTL_SECS.min(self.refresh_ttl))
        } else {
            None
        };
        if let Some(ttl) = refresh_ttl {
            let refresh = bastion_auth::token::RefreshClaims {
                iss: self.issuer.issuer.clone(),
                sub: g.user.username.clone(),
                aud: self.token_endpoint(),
                exp: now + ttl,
                iat: now,
                jti: uuid::Uuid::new_v4().to_string(),
                client_id: client.id.clone(),
                scope: scope.clone(),
                patient: g.patient.clone(),
                encounter: g.encounter.clone(),
                fhir_user: g.user.fhir_user.clone(),
                purpose_of_use: Some(g.purpose_of_use.clone()),
                family: g.family.clone(),
            };
            out["refresh_token"] = json!(self.issuer.issue_refresh(&refresh)?);
        }
        if g.scope.contains(&bastion_auth::Scope::OpenId) {
            let mut id = json!({
                "iss": self.issuer.issuer, "sub": g.user.username, "aud": client.id,
                "exp": now + self.access_ttl, "iat": now, "auth_time": now,
            });
            if let Some(n) = &g.nonce {
                id["nonce"] = json!(n);
            }
            if let Some(f) = &fhir_user {
                id["fhirUser"] = json!(format!("{}/{f}", self.fhir_base));
            }
            out["id_token"] = json!(self.issuer.issue_id_token(&id)?);
        }
        self.record(SecurityEvent::TokenIssued {
            grant: g.grant,
            client: client.id.clone(),
            user: Some(g.user.username.clone()),
            token_id: claims.jti.clone(),
            scope,
            purpose: g.purpose_of_use.clone(),
        });
        Ok(out)
    }

    /// Revokes a refresh family: every access and refresh token derived from one authorization.
    async fn revoke_family(&self, family: &str) -> Result<(), AuthError> {
        let now = now();
        let mut tx = self.store.begin().await.map_err(store_error)?;
        tx.revoke(family, now + self.refresh_ttl + LEEWAY_SECS, now).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    /// Is the token, or the refresh family it came from, revoked?
    async fn is_revoked(&self, claims: &AccessClaims) -> Result<bool, AuthError> {
        let mut ids = vec![claims.jti.clone()];
        ids.extend(claims.family.clone());
        self.store.any_revoked(&ids).await.map_err(store_error)
    }

    /// A bearer token -> who is calling. Checks signature, issuer, audience, lifetime and
    /// revocation (of the token and of the refresh family it came from).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let now = now();
        let validated = match self.cache.get(token, now) {
            Some(v) => v,
            None => {
                // A token names its issuer; only the verifier of that issuer may accept it.
                let external = bastion_auth::external::unverified_issuer(token)
                    .and_then(|iss| self.trusted.iter().find(|t| t.spec.issuer == iss));
                let claims = match external {
                    Some(t) => t.verify(token, now).await?,
                    None => self.issuer.verify(token, now)?,
                };
                let v = self.principal_of(claims);
                self.cache.put(token, &v);
                v
            }
        };
        if self.store.any_revoked(&validated.revocation_ids).await.map_err(store_error)? {
            return Err(AuthError::Revoked);
        }
        Ok(validated.principal)
    }

    /// Verified claims -> the Principal the layers below see.
    fn principal_of(&self, claims: AccessClaims) -> Validated {
        let (scopes, _) = ScopeSet::parse(&claims.scope);
        let user = claims.family.is_some().then(|| claims.sub.clone());
        // Roles and organization as configured (the configuration is read once, at start).
        let (roles, organization) = match &user {
            Some(u) => self.users.get(u).map(|u| (u.roles.clone(), u.organization.clone())).unwrap_or_default(),
            None if claims.iss == self.issuer.issuer => self
                .clients
                .get(&claims.client_id)
                .map(|c| (c.roles.clone(), c.organization.clone()))
                .unwrap_or_default(),
            // A trusted issuer's user: the roles its token names that this deployment
            // defines (others mean nothing here), and its organization.
            None => (
                claims.roles.clone().unwrap_or_default().into_iter().filter(|r| self.roles.contains_key(r)).collect(),
                claims.organization.clone(),
            ),
        };
        let purpose_of_use =
            claims.purpose_of_use.clone().unwrap_or_else(|| bastion_auth::purpose::DEFAULT.to_string());
        let attributes = bastion_policy::Attributes { roles: roles.clone(), organization: organization.clone() };
        let own_client = (claims.iss == self.issuer.issuer).then(|| self.clients.get(&claims.client_id)).flatten();
        let client_clearance = own_client.and_then(|c| c.clearance);
        let (confidentiality, client_cap) = match &user {
            // A user's clearance, capped by the client's when it has one.
            Some(u) => (self.users.get(u).map_or(Confidentiality::U, |u| u.clearance), client_clearance),
            // A backend client's own.
            None if own_client.is_some() => (client_clearance.unwrap_or(Confidentiality::N), None),
            // A trusted issuer's user: its mapped clearance (a missing or unknown one is the
            // lowest), else the normal one; its roles bring sensitivities.
            None => (
                claims
                    .clearance
                    .as_deref()
                    .map_or(Confidentiality::N, |c| Confidentiality::parse(c).unwrap_or(Confidentiality::U)),
                None,
            ),
        };
        let clearance = self.clearance(&roles, confidentiality, client_cap, &purpose_of_use);
        let base = access_scope(&scopes, claims.patient.as_ref(), attributes, &self.rules);
        let may_break_glass = user.as_ref().and_then(|u| self.users.get(u)).is_some_and(|u| u.break_glass);
        let break_glass_access = (self.hint_break_glass && may_break_glass && purpose_of_use != "BTG")
            .then(|| Arc::new(base.clone().with_clearance(self.clearance(&roles, confidentiality, client_cap, "BTG"))));
        let access = Arc::new(base.with_clearance(clearance));
        let mut revocation_ids = vec![claims.jti.clone()];
        revocation_ids.extend(claims.family.clone());
        Validated {
            exp: claims.exp,
            revocation_ids,
            principal: Arc::new(Principal {
                subject: claims.sub,
                client_id: claims.client_id,
                fhir_user: claims.fhir_user,
                patient: claims.patient,
                encounter: claims.encounter,
                scopes,
                token_id: claims.jti,
                roles,
                organization,
                purpose_of_use,
                user,
                access,
                break_glass_access,
            }),
        }
    }

    /// A caller's clearance: its own confidentiality ceiling capped by its client's, the
    /// sensitivities and label rights of its roles, for requests made for `purpose`.
    pub(crate) fn clearance(
        &self,
        roles: &[String],
        confidentiality: Confidentiality,
        client_cap: Option<Confidentiality>,
        purpose: &str,
    ) -> bastion_policy::Clearance {
        let held: Vec<&RoleLabels> = roles.iter().filter_map(|r| self.roles.get(r)).collect();
        let sensitivities = bastion_policy::Sensitivities::from_grants(
            held.iter().flat_map(|r| r.sensitivity.iter().map(String::as_str)),
        );
        bastion_policy::Clearance::new(
            client_cap.map_or(confidentiality, |cap| confidentiality.min(cap)),
            sensitivities,
            purpose,
            held.iter().any(|r| r.label_admin),
            self.label_policy.clone(),
        )
    }

    async fn introspect(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> Result<Value, AuthError> {
        // The caller is a registered confidential client, or holds a valid access token.
        match bearer_token(headers) {
            Some(t) => {
                self.authenticate(t).await.map_err(|_| AuthError::BadClientCredentials)?;
            }
            None => {
                let (_, authenticated) = self.authenticate_client(headers, form).await?;
                if !authenticated {
                    return Err(AuthError::BadClientCredentials);
                }
            }
        }
        let Some(token) = form.get("token") else { return Err(AuthError::InvalidRequest("token")) };
        let now = now();
        let Ok(claims) = self.issuer.verify(token, now) else { return Ok(json!({"active": false})) };
        if self.is_revoked(&claims).await? {
            return Ok(json!({"active": false}));
        }
        let mut out = json!({
            "active": true, "token_type": "Bearer", "scope": claims.scope, "client_id": claims.client_id,
            "sub": claims.sub, "iss": claims.iss, "aud": claims.aud, "exp": claims.exp, "iat": claims.iat,
        });
        for (k, v) in [
            ("patient", &claims.patient),
            ("encounter", &claims.encounter),
            ("fhirUser", &claims.fhir_user),
            ("purpose_of_use", &claims.purpose_of_use),
        ] {
            if let Some(v) = v {
                out[k] = json!(v);
            }
        }
        Ok(out)
    }

    async fn revoke(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(), AuthError> {
        let (client, _) = self.authenticate_client(headers, form).await?;
        let token = form.get("token").ok_or(AuthError::InvalidRequest("token"))?;
        // RFC 7009: an invalid token, or one issued to another client, is not an error; it
        // is simply not revoked by this request.
        // An access token is revoked by itself; a refresh token takes its whole family (every
        // access token derived from the same authorization) with it.
        if let Ok(claims) = self.issuer.verify(token, now())
            && claims.client_id == client.id
        {
            let mut tx = self.store.begin().await.map_err(store_error)?;
            tx.revoke(&claims.jti, claims.exp + LEEWAY_SECS, now()).await.map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            self.record(SecurityEvent::TokenRevoked { client: client.id.clone(), token_id: claims.jti, family: false });
        } else if let Ok(claims) = self.issuer.verify_refresh(token, &self.token_endpoint(), now())
            && claims.client_id == client.id
        {
            self.revoke_family(&claims.family).await?;
            self.record(SecurityEvent::TokenRevoked { client: client.id.clone(), token_id: claims.jti, family: true });
        }
        Ok(())
    }

    /// What both discovery documents say alike: the endpoints and how to use them.
    fn endpoints(&self, more: Value) -> Value {
        let auth = format!("{}/auth", self.public_url);
        let mut doc = json!({
            "issuer": auth,
            "jwks_uri": format!("{auth}/jwks"),
            "authorization_endpoint": format!("{auth}/authorize"),
            "token_endpoint": format!("{auth}/token"),
            "introspection_endpoint": format!("{auth}/introspect"),
            "revocation_endpoint": format!("{auth}/revoke"),
            "grant_types_supported": GRANT_TYPES,
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "code_challenge_methods_supported": ["S256"],
        });
        if let (Some(d), Value::Object(m)) = (doc.as_object_mut(), more) {
            d.extend(m);
        }
        doc
    }

    pub fn smart_configuration(&self) -> Value {
        self.endpoints(json!({
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": SCOPES_SUPPORTED,
            "capabilities": CAPABILITIES,
        }))
    }

    pub fn openid_configuration(&self) -> Value {
        self.endpoints(json!({
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "fhirUser", "profile", "offline_access", "online_access"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        }))
    }

    /// The origins of every registered redirect URI: the browser apps that may call the token
    /// endpoint and the API (CORS).
    pub fn app_origins(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .clients
            .values()
            .flat_map(|c| c.redirect_uris.iter())
            .filter_map(|u| authorize::origin_of(u))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];
const AUTH_METHODS: [&str; 3] = ["private_key_jwt", "client_secret_basic", "client_secret_post"];
/// What discovery promises; every one of these is implemented.
const CAPABILITIES: [&str; 18] = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
];
const SCOPES_SUPPORTED: [&str; 17] = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "patient/*.read",
    "user/*.cruds",
    "user/*.rs",
    "user/*.read",
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
];

/// The fields of a form-encoded request to a token-style endpoint.
fn form_request(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, AuthError> {
    if !is_form(headers) {
        return Err(AuthError::InvalidRequest("the body must be application/x-www-form-urlencoded"));
    }
    form(body)
}

fn reply(result: Result<Value, AuthError>) -> Response {
    match result {
        Ok(v) => json_reply(v),
        Err(e) => oauth_error(&e),
    }
}

/// `POST /auth/token`.
pub async fn token(State(auth): State<Arc<AuthService>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let result = async {
        let form = form_request(&headers, &body)?;
        let grant = form.get("grant_type").ok_or(AuthError::InvalidRequest("grant_type"))?;
        if !matches!(grant.as_str(), "client_credentials" | "authorization_code" | "refresh_token") {
            return Err(AuthError::UnsupportedGrantType);
        }
        let (client, _) = auth.authenticate_client(&headers, &form).await?;
        match grant.as_str() {
            "client_credentials" => auth.client_credentials(client, &form).await,
            "authorization_code" => auth.authorization_code(client, &form).await,
            _ => auth.refresh(client, &form).await,
        }
    }
    .await;
    if let Err(e) = &result {
        let grant = form_urlencoded::parse(&body).find(|(k, _)| k == "grant_type").map(|(_, v)| v.into_owned());
        auth.record(SecurityEvent::TokenRefused { grant, check: e.to_string() });
    }
    reply(result)
}

/// `POST /auth/introspect`.
pub async fn introspect(State(auth): State<Arc<AuthService>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    reply(async { auth.introspect(&headers, &form_request(&headers, &body)?).await }.await)
}

/// `POST /auth/revoke`.
pub async fn revoke(State(auth): State<Arc<AuthService>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    reply(async { auth.revoke(&headers, &form_request(&headers, &body)?).await.map(|()| json!({})) }.await)
}

pub async fn jwks(State(auth): State<Arc<AuthService>>) -> Response {
    public_json(auth.issuer.key().jwks())
}

pub async fn smart_configuration(State(auth): State<Arc<AuthService>>) -> Response {
    public_json(auth.smart_configuration())
}

pub async fn openid_configuration(State(auth): State<Arc<AuthService>>) -> Response {
    public_json(auth.openid_configuration())
}

/// `smart_style_url`: colours and fonts an app may use to look at home in this server's UI.
pub async fn smart_style() -> Response {
    public_json(json!({
        "color_background": "#f6f7f9",
        "color_error": "#a00000",
        "color_highlight": "#1f5fbf",
        "color_modal_backdrop": "",
        "color_success": "#1b7f3b",
        "color_text": "#1b1b1b",
        "dim_border_radius": "4px",
        "dim_font_size": "16px",
        "dim_spacing_size": "16px",
        "font_family_body": "system-ui, sans-serif",
        "font_family_heading": "system-ui, sans-serif"
    }))
}

/// The stylesheet of the login and consent pages.
pub async fn stylesheet() -> Response {
    let mut r = pages::STYLESHEET.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}
