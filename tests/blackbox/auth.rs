//! Tokens: the resource server's bearer check, the token endpoint for backend services
//! (signed assertions) and confidential clients, introspection and revocation. One test per
//! attack, named after what it rejects; none of them may issue a token or reach data.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bastion_auth::assertion::testkit::{TestKey, assertion_claims};
use bastion_auth::keys::SigningKey;
use bastion_auth::token::{AccessClaims, TokenIssuer};

use crate::both_backends;
use crate::harness::*;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The server's own issuer (its key is in its data directory): tokens with chosen claims
/// and a valid signature.
fn forger(srv: &Server) -> TokenIssuer {
    let key = SigningKey::load_or_create(&srv.data_dir).unwrap();
    TokenIssuer::new(std::sync::Arc::new(key), format!("{}/auth", srv.root), srv.base.clone())
}

fn claims(srv: &Server) -> AccessClaims {
    AccessClaims {
        iss: format!("{}/auth", srv.root),
        sub: ADMIN_CLIENT.into(),
        aud: srv.base.clone(),
        exp: now() + 300,
        iat: now(),
        jti: uuid::Uuid::new_v4().to_string(),
        client_id: ADMIN_CLIENT.into(),
        scope: "system/*.cruds".into(),
        patient: None,
        encounter: None,
        fhir_user: None,
        purpose_of_use: None,
        family: None,
        roles: None,
        organization: None,
        clearance: None,
    }
}

async fn read_with(srv: &Server, token: &str) -> reqwest::Response {
    srv.anonymous().get(srv.url("Patient")).bearer_auth(token).send().await.unwrap()
}

async fn assert_401(r: reqwest::Response) {
    let www = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let oo = assert_outcome(r, StatusCode::UNAUTHORIZED).await;
    assert!(www.unwrap_or_default().starts_with("Bearer"), "401 carries WWW-Authenticate: Bearer");
    assert_eq!(oo["issue"][0]["code"], "login");
}

/// A form POST to `/auth/{endpoint}`, authenticated as a client with HTTP Basic.
async fn post_form(
    srv: &Server,
    endpoint: &str,
    client: &str,
    secret: &str,
    body: impl Into<String>,
) -> reqwest::Response {
    srv.anonymous()
        .post(format!("{}/auth/{endpoint}", srv.root))
        .basic_auth(client, Some(secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.into())
        .send()
        .await
        .unwrap()
}

async fn token_request(srv: &Server, form: &[(&str, &str)]) -> reqwest::Response {
    srv.anonymous()
        .post(format!("{}/auth/token", srv.root))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_encode(form))
        .send()
        .await
        .unwrap()
}

fn form_encode(form: &[(&str, &str)]) -> String {
    form.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&")
}

fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asserts a token-endpoint error: status, `error` code, `no-store`, and no token.
pub async fn oauth_error(r: reqwest::Response, statuses: &[u16], code: &str) {
    let status = r.status().as_u16();
    assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    let b: Value = r.json().await.unwrap();
    assert!(statuses.contains(&status), "status {status} for {b}");
    assert_eq!(b["error"], code, "{b}");
    assert!(b.get("access_token").is_none());
}

both_backends!(fhir_api_without_token_is_401, |srv| {
    assert_401(srv.anonymous().get(srv.url("Patient")).send().await.unwrap()).await;
    assert_401(srv.anonymous().get(srv.url("Patient/x")).send().await.unwrap()).await;
    let r = srv.anonymous().post(srv.url("Patient")).header("Content-Type", "application/fhir+json").body("{}").send();
    assert_401(r.await.unwrap()).await;
    // nothing was written
    assert_eq!(body(srv.get("Patient").await).await["total"], 0);
    // the anonymous endpoints
    assert_eq!(srv.anonymous().get(srv.url("metadata")).send().await.unwrap().status(), StatusCode::OK);
    let r = srv
        .anonymous()
        .get(srv.url(".well-known/smart-configuration"))
        .header("Origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "*");
    let smart: Value = r.json().await.unwrap();
    assert_eq!(smart["token_endpoint"], format!("{}/auth/token", srv.root));
    assert!(smart["code_challenge_methods_supported"].as_array().unwrap().iter().all(|m| m != "plain"));
    let oidc: Value = srv
        .anonymous()
        .get(format!("{}/auth/.well-known/openid-configuration", srv.root))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["issuer"], format!("{}/auth", srv.root));
    let jwks: Value =
        srv.anonymous().get(format!("{}/auth/jwks", srv.root)).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert!(jwks["keys"][0].get("d").is_none(), "no private key material");
});

both_backends!(garbage_and_oversized_tokens_are_401, |srv| {
    for bad in ["", "x", "a.b.c", "Bearer", &"A".repeat(20_000), "eyJhbGciOiJSUzI1NiJ9.e30.e30"] {
        assert_401(read_with(&srv, bad).await).await;
    }
    let r = srv.anonymous().get(srv.url("Patient")).header("Authorization", "Basic YTpi").send().await.unwrap();
    assert_401(r).await;
});

both_backends!(expired_token_is_401, |srv| {
    let mut c = claims(&srv);
    c.iat = now() - 7200;
    c.exp = now() - 3600;
    assert_401(read_with(&srv, &forger(&srv).issue(&c).unwrap()).await).await;
});

both_backends!(token_from_the_future_is_401, |srv| {
    let mut c = claims(&srv);
    c.iat = now() + 3600;
    c.exp = now() + 7200;
    assert_401(read_with(&srv, &forger(&srv).issue(&c).unwrap()).await).await;
});

both_backends!(token_with_wrong_aud_is_401, |srv| {
    let mut c = claims(&srv);
    c.aud = "https://other.example/fhir".into();
    assert_401(read_with(&srv, &forger(&srv).issue(&c).unwrap()).await).await;
});

both_backends!(token_with_wrong_iss_is_401, |srv| {
    let mut c = claims(&srv);
    c.iss = "https://evil.example/auth".into();
    assert_401(read_with(&srv, &forger(&srv).issue(&c).unwrap()).await).await;
});

both_backends!(token_signed_by_another_key_is_401, |srv| {
    let other = TokenIssuer::new(std::sync::Arc::new(SigningKey::generate().unwrap()), String::new(), String::new());
    assert_401(read_with(&srv, &other.issue(&claims(&srv)).unwrap()).await).await;
    // the same, claiming the server's kid
    let server_kid = forger(&srv).key().kid().to_string();
    let t = other.issue(&claims(&srv)).unwrap();
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    parts[0] = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{server_kid}"}}"#));
    assert_401(read_with(&srv, &parts.join(".")).await).await;
});

both_backends!(alg_none_token_is_401, |srv| {
    let kid = forger(&srv).key().kid().to_string();
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims(&srv)).unwrap());
    assert_401(read_with(&srv, &format!("{header}.{payload}.")).await).await;
});

both_backends!(hs256_signed_with_the_public_key_is_401, |srv| {
    let jwks: Value =
        srv.anonymous().get(format!("{}/auth/jwks", srv.root)).send().await.unwrap().json().await.unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap();
    for secret in [jwks["keys"][0]["n"].as_str().unwrap().to_string(), jwks.to_string()] {
        let header =
            jsonwebtoken::Header { alg: jsonwebtoken::Algorithm::HS256, kid: Some(kid.into()), ..Default::default() };
        let forged =
            jsonwebtoken::encode(&header, &claims(&srv), &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
                .unwrap();
        assert_401(read_with(&srv, &forged).await).await;
    }
});

both_backends!(tampered_scope_is_401, |srv| {
    let token = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/Patient.rs").await;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["scope"] = json!("system/*.cruds");
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    assert_401(read_with(&srv, &parts.join(".")).await).await;
});

both_backends!(confidential_client_token_response, |srv| {
    let r = post_form(
        &srv,
        "token",
        ADMIN_CLIENT,
        ADMIN_SECRET,
        "grant_type=client_credentials&scope=system%2FPatient.rs+system%2FObservation.read",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    assert_eq!(r.headers().get("pragma").unwrap(), "no-cache");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_in"].as_i64().unwrap() > 0);
    assert_eq!(b["scope"], "system/Patient.rs system/Observation.read", "granted in the form asked for");
    assert_eq!(read_with(&srv, b["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);
    // client_secret_post works too
    let r = token_request(
        &srv,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", ADMIN_CLIENT),
            ("client_secret", ADMIN_SECRET),
            ("scope", "system/*.rs"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
});

both_backends!(wrong_client_secret_is_refused, |srv| {
    let r = post_form(
        &srv,
        "token",
        ADMIN_CLIENT,
        "blackbox-admin-secret-012345678",
        "grant_type=client_credentials&scope=system%2F*.rs",
    )
    .await;
    oauth_error(r, &[401], "invalid_client").await;
    let r = token_request(
        &srv,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", ADMIN_CLIENT),
            ("client_secret", ""),
            ("scope", "system/*.rs"),
        ],
    )
    .await;
    oauth_error(r, &[401], "invalid_client").await;
});

both_backends!(unknown_client_is_refused, |srv| {
    let r = token_request(
        &srv,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
            ("scope", "system/*.rs"),
        ],
    )
    .await;
    oauth_error(r, &[400, 401], "invalid_client").await;
});

both_backends!(invalid_grant_types_are_400, |srv| {
    for grant in ["not_a_grant_type", "password", "", "authorization_code"] {
        let r = post_form(&srv, "token", ADMIN_CLIENT, ADMIN_SECRET, format!("grant_type={grant}&scope=system%2F*.rs"))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{grant}");
    }
    let r = srv.anonymous().post(format!("{}/auth/token", srv.root)).json(&json!({"grant_type": "x"})).send().await;
    oauth_error(r.unwrap(), &[400], "invalid_request").await;
});

both_backends!(scope_beyond_the_client_ceiling_is_not_granted, |srv| {
    let srv = Server::start_with(
        srv.backend(),
        r#"[[clients]]
id = "reader"
kind = "confidential"
secret = "reader-secret-0123456789"
scopes = "system/Patient.rs"
"#,
    )
    .await
    .unwrap();
    let b: Value = post_form(
        &srv,
        "token",
        "reader",
        "reader-secret-0123456789",
        "grant_type=client_credentials&scope=system%2F*.cruds+system%2FAuditEvent.rs",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(b["scope"], "system/Patient.rs");
    let r = post_form(
        &srv,
        "token",
        "reader",
        "reader-secret-0123456789",
        "grant_type=client_credentials&scope=system%2FObservation.rs+patient%2FPatient.rs+bogus",
    )
    .await;
    oauth_error(r, &[400], "invalid_scope").await;
});

/// A server with a backend client `bulk` whose keys are `keys`.
async fn with_backend_client(backend: Backend, keys: &[&TestKey]) -> Server {
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string();
    Server::start_with(
        backend,
        &format!("[[clients]]\nid = \"bulk\"\nkind = \"backend\"\nscopes = \"system/*.rs\"\njwks = '{jwks}'\n"),
    )
    .await
    .unwrap()
}

async fn assertion_grant(srv: &Server, assertion: &str) -> reqwest::Response {
    token_request(
        srv,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ],
    )
    .await
}

fn token_url(srv: &Server) -> String {
    format!("{}/auth/token", srv.root)
}

both_backends!(backend_client_gets_a_token_with_rs384_and_es384_assertions, |srv| {
    let (rsa, ec) = (TestKey::rsa("rsa-1"), TestKey::ec("ec-1"));
    let srv = with_backend_client(srv.backend(), &[&rsa, &ec]).await;
    for key in [&rsa, &ec] {
        let a = key.sign(&assertion_claims("bulk", &token_url(&srv), now(), &uuid::Uuid::new_v4().to_string()));
        let r = assertion_grant(&srv, &a).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", key.alg());
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["scope"], "system/*.rs");
        assert_eq!(read_with(&srv, b["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);
    }
});

both_backends!(replayed_jti_is_refused_also_by_another_node, |srv| {
    let key = TestKey::rsa("rsa-1");
    let jwks = json!({"keys": [key.jwk()]}).to_string();
    let client = format!("[[clients]]\nid = \"bulk\"\nkind = \"backend\"\nscopes = \"system/*.rs\"\njwks = '{jwks}'\n");
    let srv = Server::start_cluster(srv.backend(), &client).await.unwrap();
    let a = key.sign(&assertion_claims("bulk", &format!("{CLUSTER_URL}/auth/token"), now(), "once"));
    assert_eq!(assertion_grant(&srv, &a).await.status(), StatusCode::OK);
    oauth_error(assertion_grant(&srv, &a).await, &[400, 401], "invalid_client").await;
    // another node on the same database has seen it too
    let node = srv.second_node().await;
    let r = token_request(
        &node,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &a),
        ],
    )
    .await;
    oauth_error(r, &[400, 401], "invalid_client").await;
});

both_backends!(assertion_with_exp_too_far_ahead_is_refused, |srv| {
    let key = TestKey::ec("ec-1");
    let srv = with_backend_client(srv.backend(), &[&key]).await;
    let mut c = assertion_claims("bulk", &token_url(&srv), now(), "j1");
    c["exp"] = json!(now() + 3600);
    oauth_error(assertion_grant(&srv, &key.sign(&c)).await, &[400, 401], "invalid_client").await;
});

both_backends!(expired_assertion_is_refused, |srv| {
    let key = TestKey::ec("ec-1");
    let srv = with_backend_client(srv.backend(), &[&key]).await;
    let mut c = assertion_claims("bulk", &token_url(&srv), now(), "j1");
    c["exp"] = json!(now() - 600);
    oauth_error(assertion_grant(&srv, &key.sign(&c)).await, &[400, 401], "invalid_client").await;
});

both_backends!(assertion_aud_not_the_token_endpoint_is_refused, |srv| {
    let key = TestKey::rsa("rsa-1");
    let srv = with_backend_client(srv.backend(), &[&key]).await;
    let c = assertion_claims("bulk", &srv.base, now(), "j1");
    oauth_error(assertion_grant(&srv, &key.sign(&c)).await, &[400, 401], "invalid_client").await;
});

both_backends!(assertion_iss_not_sub_is_refused, |srv| {
    let key = TestKey::rsa("rsa-1");
    let srv = with_backend_client(srv.backend(), &[&key]).await;
    let mut c = assertion_claims("bulk", &token_url(&srv), now(), "j1");
    c["sub"] = json!("someone-else");
    oauth_error(assertion_grant(&srv, &key.sign(&c)).await, &[400, 401], "invalid_client").await;
});

both_backends!(assertion_with_unknown_kid_is_refused, |srv| {
    let key = TestKey::rsa("rsa-1");
    let srv = with_backend_client(srv.backend(), &[&key]).await;
    let a = key.sign_with_header(
        &json!({"alg": "RS384", "kid": "not-registered"}),
        &assertion_claims("bulk", &token_url(&srv), now(), "j1"),
    );
    oauth_error(assertion_grant(&srv, &a).await, &[400, 401], "invalid_client").await;
});

both_backends!(assertion_signed_by_an_unregistered_key_is_refused, |srv| {
    let (registered, stranger) = (TestKey::rsa("rsa-1"), TestKey::rsa("rsa-1"));
    let srv = with_backend_client(srv.backend(), &[&registered]).await;
    let a = stranger.sign(&assertion_claims("bulk", &token_url(&srv), now(), "j1"));
    oauth_error(assertion_grant(&srv, &a).await, &[400, 401], "invalid_client").await;
});

both_backends!(assertion_with_jku_or_alg_none_is_refused, |srv| {
    let key = TestKey::rsa("rsa-1");
    let srv = with_backend_client(srv.backend(), &[&key]).await;
    let c = assertion_claims("bulk", &token_url(&srv), now(), "j1");
    let jku = key.sign_with_header(&json!({"alg": "RS384", "kid": "rsa-1", "jku": "https://evil.example/jwks"}), &c);
    oauth_error(assertion_grant(&srv, &jku).await, &[400, 401], "invalid_client").await;
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa-1"}"#),
        URL_SAFE_NO_PAD.encode(c.to_string())
    );
    let r = assertion_grant(&srv, &none).await;
    assert!(matches!(r.status().as_u16(), 400 | 401));
});

both_backends!(invalid_client_assertion_type_is_refused, |srv| {
    let key = TestKey::rsa("rsa-1");
    let srv = with_backend_client(srv.backend(), &[&key]).await;
    let a = key.sign(&assertion_claims("bulk", &token_url(&srv), now(), "j1"));
    let r = token_request(
        &srv,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
            ("client_assertion_type", "not_an_assertion_type"),
            ("client_assertion", &a),
        ],
    )
    .await;
    oauth_error(r, &[400, 401], "invalid_request").await;
    // a backend client cannot fall back to a secret
    let r = token_request(
        &srv,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "bulk"),
            ("client_secret", "guess"),
            ("scope", "system/*.rs"),
        ],
    )
    .await;
    assert!(matches!(r.status().as_u16(), 400 | 401));
});

both_backends!(introspection_reports_active_tokens_and_nothing_about_bad_ones, |srv| {
    let token = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/Patient.rs").await;
    let introspect = |t: String| post_form(&srv, "introspect", ADMIN_CLIENT, ADMIN_SECRET, format!("token={t}"));
    let b: Value = introspect(token.clone()).await.json().await.unwrap();
    assert_eq!(b["active"], true);
    assert_eq!(b["scope"], "system/Patient.rs");
    assert_eq!(b["client_id"], ADMIN_CLIENT);
    assert!(b["exp"].as_i64().unwrap() > now());
    for bad in ["invalid_token_value".to_string(), format!("{token}x"), String::new()] {
        let b: Value = introspect(bad).await.json().await.unwrap();
        assert_eq!(b, json!({"active": false}), "nothing but active=false");
    }
    // the endpoint itself needs a client or a bearer token
    let r = srv
        .anonymous()
        .post(format!("{}/auth/introspect", srv.root))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 401));
    let r = srv
        .anonymous()
        .post(format!("{}/auth/introspect", srv.root))
        .bearer_auth(&token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true, "a bearer token authorises introspection");
});

both_backends!(revoked_token_is_refused_on_every_node, |srv| {
    let srv = Server::start_cluster(srv.backend(), "").await.unwrap();
    let token = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/*.rs").await;
    assert_eq!(read_with(&srv, &token).await.status(), StatusCode::OK);
    let node = srv.second_node().await;
    assert_eq!(read_with(&node, &token).await.status(), StatusCode::OK);
    let r = post_form(&srv, "revoke", ADMIN_CLIENT, ADMIN_SECRET, format!("token={token}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_401(read_with(&srv, &token).await).await;
    assert_401(read_with(&node, &token).await).await;
    let b: Value =
        post_form(&srv, "introspect", ADMIN_CLIENT, ADMIN_SECRET, format!("token={token}")).await.json().await.unwrap();
    assert_eq!(b, json!({"active": false}));
    // revoking garbage is not an error (RFC 7009)
    let r = post_form(&srv, "revoke", ADMIN_CLIENT, ADMIN_SECRET, "token=garbage").await;
    assert_eq!(r.status(), StatusCode::OK);
});

/// A client's key host on loopback: serves a JWKS with a chosen `Cache-Control` and counts
/// how often the server fetches it.
struct JwksHost {
    url: String,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    doc: std::sync::Arc<std::sync::Mutex<(String, String)>>,
}

impl JwksHost {
    async fn start(jwks: String, cache_control: &str) -> JwksHost {
        use std::sync::atomic::Ordering;
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let doc = std::sync::Arc::new(std::sync::Mutex::new((jwks, cache_control.to_string())));
        let (f, d) = (fetches.clone(), doc.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (f, d) = (f.clone(), d.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let (body, cc) = d.lock().unwrap().clone();
                    ([("content-type", "application/json".to_string()), ("cache-control", cc)], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksHost { url, fetches, doc }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn serve(&self, jwks: String) {
        self.doc.lock().unwrap().0 = jwks;
    }
}

async fn with_jwks_uri_client(backend: Backend, host: &JwksHost) -> Server {
    let client = format!(
        "[[clients]]\nid = \"bulk\"\nkind = \"backend\"\nscopes = \"system/*.rs\"\njwks_uri = \"{}\"\n",
        host.url
    );
    Server::start_with(backend, &client).await.unwrap()
}

fn fresh_assertion(srv: &Server, key: &TestKey) -> String {
    key.sign(&assertion_claims("bulk", &token_url(srv), now(), &uuid::Uuid::new_v4().to_string()))
}

both_backends!(jwks_uri_client_authenticates_with_fetched_keys, |srv| {
    let key = TestKey::ec("ec-1");
    let host = JwksHost::start(key.jwks(), "max-age=3600").await;
    let srv = with_jwks_uri_client(srv.backend(), &host).await;
    for _ in 0..3 {
        assert_eq!(assertion_grant(&srv, &fresh_assertion(&srv, &key)).await.status(), StatusCode::OK);
    }
    assert_eq!(host.fetches(), 1, "max-age=3600: fetched once");
    // A jku equal to the registered URL is fine; any other is not.
    let c = assertion_claims("bulk", &token_url(&srv), now(), &uuid::Uuid::new_v4().to_string());
    let ok = key.sign_with_header(&json!({"alg": "ES384", "kid": "ec-1", "jku": host.url}), &c);
    assert_eq!(assertion_grant(&srv, &ok).await.status(), StatusCode::OK);
});

both_backends!(jwks_uri_no_store_is_fetched_for_every_assertion, |srv| {
    let key = TestKey::rsa("rsa-1");
    let host = JwksHost::start(key.jwks(), "no-store").await;
    let srv = with_jwks_uri_client(srv.backend(), &host).await;
    for _ in 0..3 {
        assert_eq!(assertion_grant(&srv, &fresh_assertion(&srv, &key)).await.status(), StatusCode::OK);
    }
    assert_eq!(host.fetches(), 3, "no-store: never reused");
});

both_backends!(jwks_uri_key_removed_by_the_client_stops_working_when_the_cache_ends, |srv| {
    let (old, new) = (TestKey::rsa("old"), TestKey::rsa("new"));
    let host = JwksHost::start(old.jwks(), "max-age=1").await;
    let srv = with_jwks_uri_client(srv.backend(), &host).await;
    assert_eq!(assertion_grant(&srv, &fresh_assertion(&srv, &old)).await.status(), StatusCode::OK);
    host.serve(new.jwks());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    oauth_error(assertion_grant(&srv, &fresh_assertion(&srv, &old)).await, &[401], "invalid_client").await;
    assert_eq!(assertion_grant(&srv, &fresh_assertion(&srv, &new)).await.status(), StatusCode::OK);
});

both_backends!(jwks_uri_rotated_key_is_fetched_early_by_its_kid, |srv| {
    let (old, new) = (TestKey::rsa("old"), TestKey::rsa("new"));
    let host = JwksHost::start(old.jwks(), "max-age=3600").await;
    let srv = with_jwks_uri_client(srv.backend(), &host).await;
    assert_eq!(assertion_grant(&srv, &fresh_assertion(&srv, &old)).await.status(), StatusCode::OK);
    host.serve(json!({"keys": [old.jwk(), new.jwk()]}).to_string());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        assertion_grant(&srv, &fresh_assertion(&srv, &new)).await.status(),
        StatusCode::OK,
        "an unknown kid refetches"
    );
    assert_eq!(host.fetches(), 2);
});

both_backends!(jwks_uri_unknown_kid_flood_does_not_hammer_the_client_host, |srv| {
    let key = TestKey::rsa("rsa-1");
    let host = JwksHost::start(key.jwks(), "max-age=3600").await;
    let srv = with_jwks_uri_client(srv.backend(), &host).await;
    assert_eq!(assertion_grant(&srv, &fresh_assertion(&srv, &key)).await.status(), StatusCode::OK);
    for i in 0..10 {
        let stranger = TestKey::rsa(&format!("made-up-{i}"));
        oauth_error(assertion_grant(&srv, &fresh_assertion(&srv, &stranger)).await, &[401], "invalid_client").await;
    }
    assert!(host.fetches() <= 2, "at most one early refetch per interval, got {}", host.fetches());
});

both_backends!(jwks_uri_unreachable_is_refused_as_invalid_client, |srv| {
    let key = TestKey::rsa("rsa-1");
    let host = JwksHost::start("not json".into(), "no-store").await;
    let srv = with_jwks_uri_client(srv.backend(), &host).await;
    oauth_error(assertion_grant(&srv, &fresh_assertion(&srv, &key)).await, &[401], "invalid_client").await;
});
