//! The authorization server's HTTP side and the resource server's token check.
//!
//! What is here: the registered clients (from `[[clients]]`), client authentication
//! (`client_secret_basic`, `client_secret_post`, `private_key_jwt`), the token endpoint for
//! `client_credentials`, RFC 7662 introspection, RFC 7009 revocation, the JWKS and both
//! discovery documents, and [`AuthService::authenticate`], which turns a bearer token into a
//! [`Principal`] for the layers below. Replayed assertion `jti`s and revocations live in the
//! store, so that every node on one database sees them at once.
//!
//! Not here yet: the authorization-code flow (login and consent pages), refresh tokens,
//! EHR launch, external issuers. The discovery documents advertise only what is here.
//!
//! Nothing secret is logged: not tokens, assertions, secrets or the reason a client failed
//! beyond the check's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bastion_auth::assertion::{ClientKeys, JWT_BEARER, verify_client_assertion};
use bastion_auth::keys::SigningKey;
use bastion_auth::token::{AccessClaims, LEEWAY_SECS, TokenIssuer};
use bastion_auth::{AuthError, Ceiling, ScopeSet, secret};
use bastion_store::Store;
use serde_json::{Value, json};

use crate::config::{ClientConfig, Config};

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
    Keys(ClientKeys),
}

struct Client {
    id: String,
    kind: ClientKind,
    credentials: Credentials,
    /// The most this client may be granted.
    scopes: ScopeSet,
    /// The union of its roles' permissions, when it has roles.
    role_permissions: Option<ScopeSet>,
}

/// Why the start-up configuration of clients is unusable.
#[derive(Debug, thiserror::Error)]
#[error("client {client}: {reason}")]
pub struct ClientConfigError {
    client: String,
    reason: String,
}

fn client_from_config(c: &ClientConfig, config: &Config) -> Result<Client, ClientConfigError> {
    let err = |reason: &str| ClientConfigError { client: c.id.clone(), reason: reason.into() };
    let kind = match c.kind.as_str() {
        "public" => ClientKind::Public,
        "confidential" => ClientKind::Confidential,
        "backend" => ClientKind::Backend,
        _ => return Err(err("kind must be public, confidential or backend")),
    };
    if c.jwks_uri.is_some() {
        return Err(err("jwks_uri is not supported yet: give the public keys inline with `jwks`"));
    }
    let credentials = match (kind, &c.secret, &c.jwks) {
        (ClientKind::Public, None, None) => Credentials::None,
        (ClientKind::Public, _, _) => return Err(err("a public client has neither a secret nor keys")),
        (_, Some(_), Some(_)) => return Err(err("give either a secret or jwks, not both")),
        (ClientKind::Confidential, Some(s), None) => {
            if s.len() < 16 {
                return Err(err("the secret must be at least 16 characters"));
            }
            Credentials::Secret(s.clone())
        }
        (_, None, Some(jwks)) => Credentials::Keys(ClientKeys::from_jwks(jwks).map_err(|e| err(&e.to_string()))?),
        (ClientKind::Backend, Some(_), None) => {
            return Err(err("a backend client authenticates with a signed assertion: give `jwks`"));
        }
        (_, None, None) => return Err(err("a confidential or backend client needs a secret or jwks")),
    };
    let (scopes, bad) = ScopeSet::parse(&c.scopes);
    if let Some(e) = bad.first() {
        return Err(err(&e.to_string()));
    }
    let role_permissions = if c.roles.is_empty() {
        None
    } else {
        let mut sets = Vec::new();
        for name in &c.roles {
            let role = config.roles.iter().find(|r| &r.name == name).ok_or_else(|| err("names an unknown role"))?;
            let (set, bad) = ScopeSet::parse(&role.permissions.join(" "));
            if let Some(e) = bad.first() {
                return Err(err(&format!("role {}: {e}", role.name)));
            }
            sets.push(set);
        }
        Some(ScopeSet::union(&sets))
    };
    Ok(Client { id: c.id.clone(), kind, credentials, scopes, role_permissions })
}

/// Tokens already validated, so a request pays one map lookup for the signature check.
/// Revocation is still asked of the store each time.
struct ValidationCache {
    entries: Mutex<HashMap<String, AccessClaims>>,
}

const VALIDATION_CACHE_ENTRIES: usize = 10_000;

impl ValidationCache {
    fn get(&self, token: &str, now: i64) -> Option<AccessClaims> {
        let map = self.entries.lock().ok()?;
        map.get(token).filter(|c| c.exp + LEEWAY_SECS >= now).cloned()
    }

    fn put(&self, token: &str, claims: &AccessClaims) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= VALIDATION_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(token.to_string(), claims.clone());
        }
    }
}

pub struct AuthService {
    issuer: TokenIssuer,
    clients: HashMap<String, Client>,
    store: Arc<dyn Store>,
    public_url: String,
    fhir_base: String,
    access_ttl: i64,
    cache: ValidationCache,
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
    tracing::info!(check = %e, "token request refused");
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
    r
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn json_reply(value: Value) -> Response {
    let mut r = axum::Json(value).into_response();
    no_store(r.headers_mut());
    r
}

/// Discovery documents may be read from any origin.
fn public_json(value: Value) -> Response {
    let mut r = axum::Json(value).into_response();
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
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

fn is_form(headers: &HeaderMap) -> bool {
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
        let mut clients = HashMap::new();
        for c in &config.clients {
            let client = client_from_config(c, config).map_err(|e| e.to_string())?;
            if clients.insert(c.id.clone(), client).is_some() {
                return Err(format!("client {} is registered twice", c.id));
            }
        }
        Ok(AuthService {
            issuer,
            clients,
            store,
            public_url,
            fhir_base,
            access_ttl: config.auth.access_token_ttl_secs.max(1) as i64,
            cache: ValidationCache { entries: Mutex::new(HashMap::new()) },
        })
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
            let Credentials::Keys(keys) = &client.credentials else { return Err(AuthError::UnauthorizedClient) };
            let now = now();
            let verified = verify_client_assertion(assertion, &client.id, keys, &self.token_endpoint(), now)?;
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
            (Credentials::Keys(_), _) => Err(AuthError::UnauthorizedClient),
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
            family: None,
        };
        let token = self.issuer.issue(&claims)?;
        tracing::info!(client = %client.id, "access token issued (client_credentials)");
        Ok(json!({"access_token": token, "token_type": "Bearer", "expires_in": self.access_ttl, "scope": claims.scope}))
    }

    /// Is the token, or the refresh family it came from, revoked?
    async fn is_revoked(&self, claims: &AccessClaims) -> Result<bool, AuthError> {
        let mut ids = vec![claims.jti.clone()];
        ids.extend(claims.family.clone());
        self.store.any_revoked(&ids).await.map_err(store_error)
    }

    /// A bearer token -> who is calling. Checks signature, issuer, audience, lifetime and
    /// revocation (of the token and of the refresh family it came from).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let now = now();
        let claims = match self.cache.get(token, now) {
            Some(c) => c,
            None => {
                let c = self.issuer.verify(token, now)?;
                self.cache.put(token, &c);
                c
            }
        };
        if self.is_revoked(&claims).await? {
            return Err(AuthError::Revoked);
        }
        let (scopes, _) = ScopeSet::parse(&claims.scope);
        Ok(Principal {
            subject: claims.sub,
            client_id: claims.client_id,
            fhir_user: claims.fhir_user,
            patient: claims.patient,
            encounter: claims.encounter,
            scopes,
            token_id: claims.jti,
        })
    }

    async fn introspect(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> Result<Value, AuthError> {
        // The caller is a registered confidential client, or holds a valid access token.
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match bearer {
            Some(t) => {
                self.authenticate(t.trim()).await.map_err(|_| AuthError::BadClientCredentials)?;
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
        for (k, v) in [("patient", &claims.patient), ("encounter", &claims.encounter), ("fhirUser", &claims.fhir_user)]
        {
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
        if let Ok(claims) = self.issuer.verify(token, now())
            && claims.client_id == client.id
        {
            let mut tx = self.store.begin().await.map_err(store_error)?;
            tx.revoke(&claims.jti, claims.exp + LEEWAY_SECS, now()).await.map_err(store_error)?;
            if let Some(f) = &claims.family {
                tx.revoke(f, now() + 400 * 24 * 3600, now()).await.map_err(store_error)?;
            }
            tx.commit().await.map_err(store_error)?;
            tracing::info!(client = %client.id, "token revoked");
        }
        Ok(())
    }

    pub fn smart_configuration(&self) -> Value {
        let auth = format!("{}/auth", self.public_url);
        json!({
            "token_endpoint": format!("{auth}/token"),
            "introspection_endpoint": format!("{auth}/introspect"),
            "revocation_endpoint": format!("{auth}/revoke"),
            "jwks_uri": format!("{auth}/jwks"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.*"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        })
    }

    pub fn openid_configuration(&self) -> Value {
        let auth = format!("{}/auth", self.public_url);
        json!({
            "issuer": auth,
            "token_endpoint": format!("{auth}/token"),
            "jwks_uri": format!("{auth}/jwks"),
            "introspection_endpoint": format!("{auth}/introspect"),
            "revocation_endpoint": format!("{auth}/revoke"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
        })
    }
}

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
    reply(
        async {
            let form = form_request(&headers, &body)?;
            let grant = form.get("grant_type").ok_or(AuthError::InvalidRequest("grant_type"))?;
            if grant != "client_credentials" {
                return Err(AuthError::UnsupportedGrantType);
            }
            let (client, _) = auth.authenticate_client(&headers, &form).await?;
            auth.client_credentials(client, &form).await
        }
        .await,
    )
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
