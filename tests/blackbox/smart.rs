//! The SMART authorization-code flow as an app and a browser drive it: authorize, the login
//! and consent pages (submitted as a browser would, cookie and hidden fields included), the
//! code exchange with PKCE, refresh with rotation, id tokens, EHR launch, CORS and
//! discovery. One test per attack, named after what it rejects; none may issue a token.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bastion_auth::pkce::challenge_of;

use crate::auth::oauth_error;
use crate::harness::*;

pub const APP: &str = "growth-chart";
pub const APP_REDIRECT: &str = "http://localhost:9000/callback";
const CONFIDENTIAL_APP: &str = "chart-review";
const CONFIDENTIAL_SECRET: &str = "chart-review-secret-0123456789";
const CONFIDENTIAL_REDIRECT: &str = "https://review.example/cb";
const EHR: &str = "ehr-frontend";
const ASYMMETRIC_APP: &str = "signed-app";
const ASYMMETRIC_REDIRECT: &str = "https://signed.example/cb";

/// The private key of the confidential asymmetric app (`private_key_jwt`).
fn asymmetric_key() -> &'static bastion_auth::assertion::testkit::TestKey {
    static KEY: OnceLock<bastion_auth::assertion::testkit::TestKey> = OnceLock::new();
    KEY.get_or_init(|| bastion_auth::assertion::testkit::TestKey::ec("signed-app-1"))
}
const EHR_REDIRECT: &str = "http://127.0.0.1:7000/ehr";
pub const PASSWORD: &str = "correct horse battery staple";
pub const VERIFIER: &str = "a-verifier-of-more-than-forty-three-characters-0123456789";
const LOCKOUT_AFTER: u32 = 3;

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bastion_auth::secret::hash_password(PASSWORD).unwrap())
}

/// Clients, users and roles of a SMART deployment.
pub fn smart_toml() -> String {
    let hash = password_hash();
    let asymmetric_jwks = asymmetric_key().jwks();
    format!(
        r#"
[limits]
failed_logins_before_lockout = {LOCKOUT_AFTER}

[[clients]]
id = "{APP}"
kind = "public"
redirect_uris = ["{APP_REDIRECT}"]
scopes = "launch launch/patient launch/encounter openid fhirUser offline_access online_access patient/*.cruds user/*.cruds"

[[clients]]
id = "{CONFIDENTIAL_APP}"
kind = "confidential"
secret = "{CONFIDENTIAL_SECRET}"
redirect_uris = ["{CONFIDENTIAL_REDIRECT}"]
scopes = "launch/patient openid fhirUser offline_access patient/*.rs"

[[clients]]
id = "{ASYMMETRIC_APP}"
kind = "confidential"
jwks = '{asymmetric_jwks}'
redirect_uris = ["{ASYMMETRIC_REDIRECT}"]
scopes = "launch/patient openid fhirUser offline_access patient/*.rs"

[[clients]]
id = "{EHR}"
kind = "public"
redirect_uris = ["{EHR_REDIRECT}"]
scopes = "openid fhirUser user/*.rs"

[[users]]
username = "dr-smith"
password = "{hash}"
fhir_user = "Practitioner/dr-smith"
roles = ["clinician"]
purposes = ["TREAT", "ETREAT"]
break_glass = true

[[users]]
username = "ann"
password = "{hash}"
fhir_user = "Patient/ann"
roles = ["patient"]

[[roles]]
name = "clinician"
permissions = ["user/*.cruds", "patient/*.cruds"]

[[roles]]
name = "patient"
permissions = ["patient/*.rs"]
"#
    )
}

macro_rules! smart_backends {
    ($name:ident, |$srv:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $srv = Server::start_with(Backend::Sqlite, &smart_toml()).await.unwrap();
                seed(&$srv).await;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($srv) = Server::start_with(Backend::Postgres, &smart_toml()).await else { return };
                seed(&$srv).await;
                $body
            }
        }
    };
}

pub(crate) use smart_backends;

pub async fn seed(srv: &Server) {
    for (id, family) in [("ann", "Anders"), ("bob", "Berger")] {
        let p = json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": ["X"]}]});
        assert!(srv.put(&format!("Patient/{id}"), &p).await.status().is_success());
    }
    let dr = json!({"resourceType": "Practitioner", "id": "dr-smith", "name": [{"family": "Smith"}]});
    assert!(srv.put("Practitioner/dr-smith", &dr).await.status().is_success());
    let enc = json!({"resourceType": "Encounter", "id": "enc-1", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/ann"}});
    assert!(srv.put("Encounter/enc-1", &enc).await.status().is_success());
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// An HTML form as a browser sees it: every input a "submit as given" client would send.
#[derive(Debug, Default)]
pub struct Form {
    pub hidden: Vec<(String, String)>,
    /// `(value, checked)` of every `scope` checkbox.
    pub scopes: Vec<(String, bool)>,
    pub patients: Vec<String>,
    pub has_login: bool,
    pub has_decision: bool,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}

pub fn parse_form(html: &str) -> Form {
    let mut f = Form::default();
    for tag in html.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        if tag.starts_with("input") {
            let name = attr(tag, "name").unwrap_or_default();
            let value = attr(tag, "value").unwrap_or_default();
            match attr(tag, "type").as_deref() {
                Some("hidden") => f.hidden.push((name, value)),
                Some("checkbox") if name == "scope" => f.scopes.push((value, tag.contains(" checked"))),
                Some("password") => f.has_login = true,
                _ => {}
            }
        } else if tag.starts_with("option") {
            f.patients.push(attr(tag, "value").unwrap_or_default());
        } else if tag.starts_with("button") && attr(tag, "name").as_deref() == Some("decision") {
            f.has_decision = true;
        }
    }
    f
}

pub fn encode(pairs: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// An authorization request's parameters.
pub struct Authorize {
    pub client: String,
    pub redirect: String,
    pub scope: String,
    pub state: String,
    pub challenge: String,
    pub method: String,
    pub aud: Option<String>,
    pub launch: Option<String>,
    /// More parameters (e.g. `purpose_of_use`).
    pub extra: Vec<(String, String)>,
}

impl Authorize {
    pub fn new(srv: &Server, scope: &str) -> Authorize {
        Authorize {
            client: APP.into(),
            redirect: APP_REDIRECT.into(),
            scope: scope.into(),
            state: uuid::Uuid::new_v4().to_string(),
            challenge: challenge_of(VERIFIER),
            method: "S256".into(),
            aud: Some(srv.base.clone()),
            launch: None,
            extra: Vec::new(),
        }
    }

    fn query(&self) -> String {
        let mut p = owned(&[
            ("response_type", "code"),
            ("client_id", &self.client),
            ("redirect_uri", &self.redirect),
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.challenge),
            ("code_challenge_method", &self.method),
        ]);
        if let Some(a) = &self.aud {
            p.push(("aud".into(), a.clone()));
        }
        if let Some(l) = &self.launch {
            p.push(("launch".into(), l.clone()));
        }
        p.extend(self.extra.iter().cloned());
        encode(&p)
    }
}

/// A browser in the middle of the flow: its cookie and the last page.
pub struct Browser {
    http: reqwest::Client,
    root: String,
    cookie: Option<String>,
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

impl Browser {
    pub async fn authorize(srv: &Server, a: &Authorize) -> Browser {
        let mut b = Browser {
            http: no_redirects(),
            root: srv.root.clone(),
            cookie: None,
            status: StatusCode::OK,
            headers: Default::default(),
            html: String::new(),
        };
        let r = b.http.get(format!("{}/auth/authorize?{}", srv.root, a.query())).send().await.unwrap();
        b.take(r).await;
        b
    }

    async fn take(&mut self, r: reqwest::Response) {
        if let Some(c) = r.headers().get("set-cookie") {
            self.cookie = Some(c.to_str().unwrap().split(';').next().unwrap().to_string());
        }
        self.status = r.status();
        self.headers = r.headers().clone();
        self.html = r.text().await.unwrap();
    }

    pub fn form(&self) -> Form {
        parse_form(&self.html)
    }

    /// Posts the current page's hidden fields plus `fields` to `/auth/{path}`.
    pub async fn submit(&mut self, path: &str, fields: Vec<(String, String)>) {
        let mut all = self.form().hidden;
        all.extend(fields);
        let mut req = self
            .http
            .post(format!("{}/auth/{path}", self.root))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(encode(&all));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c.clone());
        }
        let r = req.send().await.unwrap();
        self.take(r).await;
    }

    pub async fn login(&mut self, user: &str, password: &str) {
        self.submit("login", owned(&[("username", user), ("password", password)])).await;
    }

    /// Submits the consent form as given (ticked boxes, first patient) with `decision`.
    pub async fn decide(&mut self, decision: &str) {
        let f = self.form();
        let mut fields: Vec<(String, String)> =
            f.scopes.iter().filter(|(_, c)| *c).map(|(v, _)| ("scope".to_string(), v.clone())).collect();
        if let Some(p) = f.patients.first() {
            fields.push(("patient".into(), p.clone()));
        }
        fields.push(("decision".into(), decision.into()));
        self.submit("consent", fields).await;
    }

    /// The query parameters of the redirect back to the app.
    pub fn redirect_params(&self) -> HashMap<String, String> {
        assert_eq!(self.status, StatusCode::FOUND, "expected a redirect, got {}: {}", self.status, self.html);
        let location = self.headers.get("location").unwrap().to_str().unwrap();
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
        form_urlencoded::parse(query.as_bytes()).into_owned().collect()
    }
}

/// A full login and approve-as-given: the authorization code.
pub async fn code_for(srv: &Server, a: &Authorize, user: &str) -> String {
    let mut b = Browser::authorize(srv, a).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.html);
    b.login(user, PASSWORD).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.html);
    b.decide("approve").await;
    let p = b.redirect_params();
    assert_eq!(p.get("state"), Some(&a.state), "state echoed");
    p.get("code").unwrap_or_else(|| panic!("no code: {p:?}")).clone()
}

pub async fn exchange(srv: &Server, code: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", APP_REDIRECT),
        ("client_id", APP),
        ("code_verifier", VERIFIER),
    ]);
    for (k, v) in extra {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() || *k == "code_verifier" {
            form.push((k.to_string(), v.to_string()));
        }
    }
    token_post(srv, &form, None).await
}

async fn token_post(srv: &Server, form: &[(String, String)], basic: Option<(&str, &str)>) -> reqwest::Response {
    let mut r = srv
        .anonymous()
        .post(format!("{}/auth/token", srv.root))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(form));
    if let Some((id, secret)) = basic {
        r = r.basic_auth(id, Some(secret));
    }
    r.send().await.unwrap()
}

pub async fn tokens_for(srv: &Server, scope: &str, user: &str) -> Value {
    let code = code_for(srv, &Authorize::new(srv, scope), user).await;
    let r = exchange(srv, &code, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn claims_of(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header_of(jwt: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap()
}

async fn read_as(srv: &Server, token: &str, path: &str) -> StatusCode {
    srv.anonymous().get(srv.url(path)).bearer_auth(token).send().await.unwrap().status()
}

async fn refresh(srv: &Server, refresh_token: &str, scope: Option<&str>, client: &str) -> reqwest::Response {
    let mut form = owned(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client)]);
    if let Some(s) = scope {
        form.push(("scope".into(), s.into()));
    }
    token_post(srv, &form, None).await
}

const PATIENT_SCOPES: &str = "launch/patient openid fhirUser offline_access patient/*.rs";

// ---- the flow as a user and an app see it --------------------------------------------

smart_backends!(standalone_patient_launch_issues_tokens_with_context, |srv| {
    let a = Authorize::new(&srv, PATIENT_SCOPES);
    let mut b = Browser::authorize(&srv, &a).await;
    assert!(b.form().has_login, "the authorization endpoint shows a login form");
    let cookie = b.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let csp = b.headers.get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    b.login("ann", PASSWORD).await;
    let consent = b.form();
    assert!(consent.has_decision);
    assert!(consent.patients.is_empty(), "a patient signing in needs no patient chooser");
    for s in ["launch/patient", "openid", "fhirUser", "offline_access", "patient/*.rs"] {
        assert!(consent.scopes.contains(&(s.to_string(), true)), "{s} offered and ticked: {:?}", consent.scopes);
    }
    b.decide("approve").await;
    let p = b.redirect_params();
    assert_eq!(p["state"], a.state);
    let r = exchange(&srv, &p["code"], &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_i64().unwrap() > 0);
    assert_eq!(t["patient"], "ann", "a bare patient id");
    assert_eq!(t["need_patient_banner"], true);
    let style = t["smart_style_url"].as_str().unwrap();
    let style: Value = srv.anonymous().get(style).send().await.unwrap().json().await.unwrap();
    assert!(style["color_background"].is_string());
    for s in PATIENT_SCOPES.split(' ') {
        assert!(t["scope"].as_str().unwrap().split(' ').any(|g| g == s), "{s} granted in {}", t["scope"]);
    }
    // id token: RS256, issuer, audience = client, fhirUser
    let id = t["id_token"].as_str().unwrap();
    assert_eq!(header_of(id)["alg"], "RS256");
    let idc = claims_of(id);
    assert_eq!(idc["iss"], format!("{}/auth", srv.root));
    assert_eq!(idc["aud"], APP);
    assert_eq!(idc["fhirUser"], format!("{}/Patient/ann", srv.base));
    // refresh token of at least 90 days
    let rt = claims_of(t["refresh_token"].as_str().unwrap());
    assert!(rt["exp"].as_i64().unwrap() - rt["iat"].as_i64().unwrap() >= 90 * 24 * 3600);
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(read_as(&srv, access, "Patient/ann").await, StatusCode::OK);
    // introspection, as SMART profiles it
    let r = srv
        .anonymous()
        .post(format!("{}/auth/introspect", srv.root))
        .bearer_auth(access)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(&owned(&[("token", access)])))
        .send()
        .await
        .unwrap();
    let i: Value = r.json().await.unwrap();
    assert_eq!(i["active"], true);
    assert_eq!(i["patient"], "ann");
    assert_eq!(i["client_id"], APP);
    assert_eq!(i["scope"], t["scope"]);
    assert_eq!(i["iss"], idc["iss"]);
    assert_eq!(i["sub"], idc["sub"]);
});

smart_backends!(practitioner_standalone_launch_chooses_a_patient, |srv| {
    let a = Authorize::new(&srv, "launch/patient openid fhirUser patient/Observation.rs patient/Patient.rs");
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("dr-smith", PASSWORD).await;
    let f = b.form();
    assert!(f.patients.contains(&"ann".to_string()) && f.patients.contains(&"bob".to_string()), "{:?}", f.patients);
    let mut fields: Vec<(String, String)> =
        f.scopes.iter().filter(|(_, c)| *c).map(|(v, _)| ("scope".to_string(), v.clone())).collect();
    fields.push(("patient".into(), "bob".into()));
    fields.push(("decision".into(), "approve".into()));
    b.submit("consent", fields).await;
    let code = b.redirect_params()["code"].clone();
    let t: Value = exchange(&srv, &code, &[]).await.json().await.unwrap();
    assert_eq!(t["patient"], "bob");
    assert_eq!(claims_of(t["id_token"].as_str().unwrap())["fhirUser"], format!("{}/Practitioner/dr-smith", srv.base));
});

smart_backends!(consent_page_offers_category_sub_scopes, |srv| {
    let a = Authorize::new(&srv, "launch/patient patient/Observation.rs patient/Condition.rs patient/Patient.rs");
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("ann", PASSWORD).await;
    let f = b.form();
    let lab = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    let problem =
        "patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item";
    assert!(f.scopes.contains(&(lab.to_string(), false)), "offered, unticked: {:?}", f.scopes);
    assert!(f.scopes.contains(&(problem.to_string(), false)));
    // The user gives only the sub-scopes, and Patient.
    let fields = owned(&[
        ("scope", "launch/patient"),
        ("scope", "patient/Patient.rs"),
        ("scope", lab),
        ("scope", problem),
        ("decision", "approve"),
    ]);
    b.submit("consent", fields).await;
    let code = b.redirect_params()["code"].clone();
    let t: Value = exchange(&srv, &code, &[]).await.json().await.unwrap();
    let granted: Vec<&str> = t["scope"].as_str().unwrap().split(' ').collect();
    assert!(
        granted.contains(&lab) && granted.contains(&problem) && granted.contains(&"patient/Patient.rs"),
        "{granted:?}"
    );
    assert!(!granted.contains(&"patient/Observation.rs") && !granted.contains(&"patient/Condition.rs"), "{granted:?}");
});

smart_backends!(unticked_scope_is_not_granted, |srv| {
    let a = Authorize::new(&srv, "launch/patient patient/Observation.rs patient/Patient.rs");
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("ann", PASSWORD).await;
    b.submit(
        "consent",
        owned(&[("scope", "launch/patient"), ("scope", "patient/Patient.rs"), ("decision", "approve")]),
    )
    .await;
    let code = b.redirect_params()["code"].clone();
    let t: Value = exchange(&srv, &code, &[]).await.json().await.unwrap();
    assert_eq!(t["scope"], "launch/patient patient/Patient.rs");
});

smart_backends!(smuggled_consent_scope_is_ignored, |srv| {
    let a = Authorize::new(&srv, "launch/patient patient/Patient.rs");
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("ann", PASSWORD).await;
    let fields = owned(&[
        ("scope", "launch/patient"),
        ("scope", "patient/Patient.rs"),
        ("scope", "user/*.cruds"),
        ("scope", "patient/*.cruds"),
        ("decision", "approve"),
    ]);
    b.submit("consent", fields).await;
    let code = b.redirect_params()["code"].clone();
    let t: Value = exchange(&srv, &code, &[]).await.json().await.unwrap();
    assert_eq!(t["scope"], "launch/patient patient/Patient.rs", "only offered scopes count");
});

smart_backends!(deny_redirects_access_denied_with_state, |srv| {
    let a = Authorize::new(&srv, PATIENT_SCOPES);
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("ann", PASSWORD).await;
    b.decide("deny").await;
    let p = b.redirect_params();
    assert_eq!(p["error"], "access_denied");
    assert_eq!(p["state"], a.state);
    assert!(!p.contains_key("code"));
});

smart_backends!(authorize_post_works_like_get, |srv| {
    let a = Authorize::new(&srv, PATIENT_SCOPES);
    let r = no_redirects()
        .post(format!("{}/auth/authorize", srv.root))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(a.query())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(parse_form(&r.text().await.unwrap()).has_login);
});

smart_backends!(confidential_client_exchanges_code_with_basic_auth, |srv| {
    let mut a = Authorize::new(&srv, PATIENT_SCOPES);
    a.client = CONFIDENTIAL_APP.into();
    a.redirect = CONFIDENTIAL_REDIRECT.into();
    let code = code_for(&srv, &a, "ann").await;
    let form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", CONFIDENTIAL_REDIRECT),
        ("code_verifier", VERIFIER),
    ]);
    // Without its secret the client is refused, and the code is spent.
    let r = token_post(&srv, &form, Some((CONFIDENTIAL_APP, "wrong-secret-0123456789"))).await;
    oauth_error(r, &[401], "invalid_client").await;
    let code = code_for(&srv, &a, "ann").await;
    let mut form = form;
    form[1].1 = code;
    let r = token_post(&srv, &form, Some((CONFIDENTIAL_APP, CONFIDENTIAL_SECRET))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    assert!(t["refresh_token"].is_string() && t["id_token"].is_string());
});

smart_backends!(asymmetric_client_exchanges_code_and_refreshes_with_signed_assertions, |srv| {
    use bastion_auth::assertion::testkit::assertion_claims;
    let mut a = Authorize::new(&srv, PATIENT_SCOPES);
    a.client = ASYMMETRIC_APP.into();
    a.redirect = ASYMMETRIC_REDIRECT.into();
    let code = code_for(&srv, &a, "ann").await;
    let token_url = format!("{}/auth/token", srv.root);
    let assertion = || {
        asymmetric_key().sign(&assertion_claims(ASYMMETRIC_APP, &token_url, now(), &uuid::Uuid::new_v4().to_string()))
    };
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", ASYMMETRIC_REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_assertion_type", jwt_bearer),
        ("client_assertion", &assertion()),
    ]);
    let r = token_post(&srv, &form, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    assert!(t["id_token"].is_string(), "an id token for an asymmetric client too");
    let form = owned(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ("client_assertion_type", jwt_bearer),
        ("client_assertion", &assertion()),
    ]);
    assert_eq!(token_post(&srv, &form, None).await.status(), StatusCode::OK, "refresh with a new assertion");
    // Without an assertion the client is refused (and says how to authenticate).
    let form = owned(&[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", ASYMMETRIC_APP)]);
    let r = token_post(&srv, &form, None).await;
    assert!(r.headers().get("www-authenticate").is_some());
    oauth_error(r, &[401], "invalid_client").await;
});

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---- the authorization request: bad input --------------------------------------------

async fn error_page(srv: &Server, a: &Authorize) {
    let b = Browser::authorize(srv, a).await;
    assert_eq!(b.status, StatusCode::BAD_REQUEST, "shown, not redirected");
    assert!(b.headers.get("location").is_none());
    assert!(!b.form().has_login);
}

async fn error_redirect(srv: &Server, a: &Authorize, error: &str) {
    let b = Browser::authorize(srv, a).await;
    let p = b.redirect_params();
    assert_eq!(p["error"], error, "{p:?}");
    assert_eq!(p["state"], a.state);
    assert!(!p.contains_key("code"));
}

smart_backends!(redirect_uri_mismatch_is_shown_not_redirected, |srv| {
    for bad in ["http://localhost:9000/callback/x", "http://localhost:9000/callbac", "https://evil.example/callback"] {
        let mut a = Authorize::new(&srv, PATIENT_SCOPES);
        a.redirect = bad.into();
        error_page(&srv, &a).await;
    }
});

smart_backends!(unknown_client_is_shown_not_redirected, |srv| {
    let mut a = Authorize::new(&srv, PATIENT_SCOPES);
    a.client = "no-such-app".into();
    error_page(&srv, &a).await;
});

smart_backends!(wrong_aud_gets_no_code, |srv| {
    let mut a = Authorize::new(&srv, PATIENT_SCOPES);
    a.aud = Some("https://inferno.healthit.gov/invalid_aud".into());
    error_redirect(&srv, &a, "invalid_request").await;
    a.aud = None;
    error_redirect(&srv, &a, "invalid_request").await;
});

smart_backends!(plain_pkce_is_refused, |srv| {
    let mut a = Authorize::new(&srv, PATIENT_SCOPES);
    a.method = "plain".into();
    a.challenge = VERIFIER[..43].into();
    error_redirect(&srv, &a, "invalid_request").await;
});

smart_backends!(missing_pkce_challenge_is_refused, |srv| {
    let mut a = Authorize::new(&srv, PATIENT_SCOPES);
    a.challenge = String::new();
    error_redirect(&srv, &a, "invalid_request").await;
});

smart_backends!(unknown_launch_is_refused, |srv| {
    let mut a = Authorize::new(&srv, "launch openid patient/*.rs");
    a.launch = Some("made-up-launch".into());
    error_redirect(&srv, &a, "invalid_request").await;
});

// ---- the login page: bad input ---------------------------------------------------------

smart_backends!(wrong_password_issues_nothing, |srv| {
    let mut b = Browser::authorize(&srv, &Authorize::new(&srv, PATIENT_SCOPES)).await;
    b.login("ann", "wrong password").await;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    assert!(b.form().has_login, "the login form again");
    assert!(!b.form().has_decision);
    assert!(b.html.contains("username or password is wrong"));
    b.login("nobody", PASSWORD).await;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED, "an unknown user reads the same");
    assert!(b.html.contains("username or password is wrong"));
});

smart_backends!(failed_logins_lock_the_user_out, |srv| {
    let mut b = Browser::authorize(&srv, &Authorize::new(&srv, PATIENT_SCOPES)).await;
    for _ in 0..LOCKOUT_AFTER {
        b.login("ann", "guess").await;
        assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    }
    b.login("ann", PASSWORD).await;
    assert_eq!(b.status, StatusCode::TOO_MANY_REQUESTS, "locked even with the right password");
    assert!(b.headers.get("retry-after").is_some());
    assert!(!b.form().has_decision);
    // another user from another browser is not locked (the address is: loopback here, so
    // only the user's lock is checked by name)
});

smart_backends!(login_post_without_the_browser_cookie_is_refused, |srv| {
    let mut b = Browser::authorize(&srv, &Authorize::new(&srv, PATIENT_SCOPES)).await;
    b.cookie = None;
    b.login("ann", PASSWORD).await;
    assert_eq!(b.status, StatusCode::BAD_REQUEST);
    assert!(!b.form().has_decision, "a cross-site form post cannot sign in");
});

smart_backends!(login_post_with_a_wrong_csrf_token_is_refused, |srv| {
    let b = Browser::authorize(&srv, &Authorize::new(&srv, PATIENT_SCOPES)).await;
    let request = b.form().hidden.iter().find(|(k, _)| k == "request").unwrap().1.clone();
    let r = no_redirects()
        .post(format!("{}/auth/login", srv.root))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Cookie", b.cookie.clone().unwrap())
        .body(encode(&owned(&[("request", &request), ("csrf", "forged"), ("username", "ann"), ("password", PASSWORD)])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!parse_form(&r.text().await.unwrap()).has_decision);
});

smart_backends!(consent_submitted_twice_is_refused, |srv| {
    let mut b = Browser::authorize(&srv, &Authorize::new(&srv, PATIENT_SCOPES)).await;
    b.login("ann", PASSWORD).await;
    let page = b.html.clone();
    b.decide("approve").await;
    assert!(b.redirect_params().contains_key("code"));
    b.html = page;
    b.decide("approve").await;
    assert_eq!(b.status, StatusCode::BAD_REQUEST, "the same consent form gives no second code");
});

// ---- the token endpoint: bad input -----------------------------------------------------

smart_backends!(missing_code_verifier_is_refused, |srv| {
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    let form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", APP_REDIRECT),
        ("client_id", APP),
    ]);
    oauth_error(token_post(&srv, &form, None).await, &[400], "invalid_grant").await;
});

smart_backends!(blank_code_verifier_is_refused, |srv| {
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    oauth_error(exchange(&srv, &code, &[("code_verifier", "")]).await, &[400], "invalid_grant").await;
});

smart_backends!(wrong_code_verifier_is_refused, |srv| {
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    let wrong = "x".repeat(50);
    oauth_error(exchange(&srv, &code, &[("code_verifier", &wrong)]).await, &[400], "invalid_grant").await;
});

smart_backends!(plain_verifier_equal_to_challenge_is_refused, |srv| {
    let a = Authorize::new(&srv, PATIENT_SCOPES);
    let code = code_for(&srv, &a, "ann").await;
    oauth_error(exchange(&srv, &code, &[("code_verifier", &a.challenge)]).await, &[400], "invalid_grant").await;
});

smart_backends!(bad_code_is_400, |srv| {
    oauth_error(exchange(&srv, "BAD_CODE", &[]).await, &[400], "invalid_grant").await;
});

smart_backends!(reused_code_is_refused_and_revokes_its_tokens, |srv| {
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    let first: Value = exchange(&srv, &code, &[]).await.json().await.unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(read_as(&srv, access, "Patient/ann").await, StatusCode::OK);
    oauth_error(exchange(&srv, &code, &[]).await, &[400], "invalid_grant").await;
    assert_eq!(
        read_as(&srv, access, "Patient/ann").await,
        StatusCode::UNAUTHORIZED,
        "the first use's token is revoked"
    );
    let r = refresh(&srv, first["refresh_token"].as_str().unwrap(), None, APP).await;
    oauth_error(r, &[400], "invalid_grant").await;
});

smart_backends!(code_of_another_client_is_refused, |srv| {
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    oauth_error(
        exchange(&srv, &code, &[("client_id", EHR), ("redirect_uri", EHR_REDIRECT)]).await,
        &[400],
        "invalid_grant",
    )
    .await;
});

smart_backends!(redirect_uri_differing_at_the_token_endpoint_is_refused, |srv| {
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    oauth_error(
        exchange(&srv, &code, &[("redirect_uri", "http://localhost:9000/other")]).await,
        &[400],
        "invalid_grant",
    )
    .await;
});

smart_backends!(unknown_client_at_the_token_endpoint_is_refused, |srv| {
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    oauth_error(exchange(&srv, &code, &[("client_id", "BAD_CLIENT_ID")]).await, &[400, 401], "invalid_client").await;
});

smart_backends!(id_and_refresh_tokens_are_not_access_tokens, |srv| {
    let t = tokens_for(&srv, PATIENT_SCOPES, "ann").await;
    for kind in ["id_token", "refresh_token"] {
        assert_eq!(read_as(&srv, t[kind].as_str().unwrap(), "Patient/ann").await, StatusCode::UNAUTHORIZED, "{kind}");
    }
    let r = refresh(&srv, t["access_token"].as_str().unwrap(), None, APP).await;
    oauth_error(r, &[400], "invalid_grant").await;
});

// ---- refresh -----------------------------------------------------------------------------

smart_backends!(refresh_rotates_and_accepts_the_same_scope, |srv| {
    let t = tokens_for(&srv, PATIENT_SCOPES, "ann").await;
    let old = t["refresh_token"].as_str().unwrap();
    let r = refresh(&srv, old, Some(t["scope"].as_str().unwrap()), APP).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let n: Value = r.json().await.unwrap();
    assert_eq!(n["scope"], t["scope"]);
    assert_eq!(n["patient"], "ann");
    let new_refresh = n["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, old, "rotated");
    let rc = claims_of(new_refresh);
    assert!(rc["exp"].as_i64().unwrap() - rc["iat"].as_i64().unwrap() >= 90 * 24 * 3600, "a fresh 90-day period");
    assert_eq!(read_as(&srv, n["access_token"].as_str().unwrap(), "Patient/ann").await, StatusCode::OK);
    // Without a scope: the same grant.
    let m: Value = refresh(&srv, new_refresh, None, APP).await.json().await.unwrap();
    assert_eq!(m["scope"], t["scope"]);
});

smart_backends!(retired_refresh_token_is_refused_and_revokes_the_family, |srv| {
    let t = tokens_for(&srv, PATIENT_SCOPES, "ann").await;
    let old = t["refresh_token"].as_str().unwrap();
    let n: Value = refresh(&srv, old, None, APP).await.json().await.unwrap();
    oauth_error(refresh(&srv, old, None, APP).await, &[400], "invalid_grant").await;
    let newest = n["access_token"].as_str().unwrap();
    assert_eq!(
        read_as(&srv, newest, "Patient/ann").await,
        StatusCode::UNAUTHORIZED,
        "a stolen token's replay kills the family"
    );
    oauth_error(refresh(&srv, n["refresh_token"].as_str().unwrap(), None, APP).await, &[400], "invalid_grant").await;
});

smart_backends!(refresh_token_of_another_client_is_refused, |srv| {
    let t = tokens_for(&srv, PATIENT_SCOPES, "ann").await;
    oauth_error(refresh(&srv, t["refresh_token"].as_str().unwrap(), None, EHR).await, &[400], "invalid_grant").await;
});

smart_backends!(scope_escalation_on_refresh_is_refused, |srv| {
    let t = tokens_for(&srv, "launch/patient offline_access patient/Patient.rs", "ann").await;
    let r = refresh(&srv, t["refresh_token"].as_str().unwrap(), Some("offline_access patient/*.cruds"), APP).await;
    oauth_error(r, &[400], "invalid_scope").await;
});

smart_backends!(refresh_may_narrow_the_scope, |srv| {
    let t = tokens_for(&srv, "launch/patient offline_access patient/Patient.rs patient/Observation.rs", "ann").await;
    let n: Value = refresh(&srv, t["refresh_token"].as_str().unwrap(), Some("offline_access patient/Patient.r"), APP)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(n["scope"], "offline_access patient/Patient.r");
});

smart_backends!(garbage_refresh_token_is_refused, |srv| {
    oauth_error(refresh(&srv, "not-a-refresh-token", None, APP).await, &[400], "invalid_grant").await;
});

smart_backends!(revoked_refresh_token_kills_its_access_tokens, |srv| {
    let t = tokens_for(&srv, PATIENT_SCOPES, "ann").await;
    let access = t["access_token"].as_str().unwrap();
    let form = owned(&[("token", t["refresh_token"].as_str().unwrap()), ("client_id", APP)]);
    let r = srv
        .anonymous()
        .post(format!("{}/auth/revoke", srv.root))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(read_as(&srv, access, "Patient/ann").await, StatusCode::UNAUTHORIZED);
    oauth_error(refresh(&srv, t["refresh_token"].as_str().unwrap(), None, APP).await, &[400], "invalid_grant").await;
});

smart_backends!(no_refresh_token_without_offline_or_online_access, |srv| {
    let t = tokens_for(&srv, "launch/patient patient/*.rs", "ann").await;
    assert!(t.get("refresh_token").is_none());
    assert!(t.get("id_token").is_none(), "no id token without openid");
    let online = tokens_for(&srv, "launch/patient online_access patient/*.rs", "ann").await;
    let rc = claims_of(online["refresh_token"].as_str().unwrap());
    assert!(rc["exp"].as_i64().unwrap() - rc["iat"].as_i64().unwrap() <= 12 * 3600, "online access is short");
});

// ---- EHR launch ------------------------------------------------------------------------

async fn ehr_user_token(srv: &Server, user: &str) -> String {
    let mut a = Authorize::new(srv, "openid fhirUser user/*.rs");
    a.client = EHR.into();
    a.redirect = EHR_REDIRECT.into();
    let code = code_for(srv, &a, user).await;
    let form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", EHR_REDIRECT),
        ("client_id", EHR),
        ("code_verifier", VERIFIER),
    ]);
    let t: Value = token_post(srv, &form, None).await.json().await.unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

async fn register_launch(srv: &Server, token: &str, body: &Value) -> reqwest::Response {
    srv.anonymous()
        .post(format!("{}/auth/launch", srv.root))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

smart_backends!(ehr_launch_gives_patient_and_encounter_context, |srv| {
    let ehr = ehr_user_token(&srv, "dr-smith").await;
    let r = register_launch(&srv, &ehr, &json!({"patient": "ann", "encounter": "enc-1"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let launch = r.json::<Value>().await.unwrap()["launch"].as_str().unwrap().to_string();
    let mut a = Authorize::new(&srv, "launch openid fhirUser offline_access patient/*.rs user/*.rs");
    a.launch = Some(launch);
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("dr-smith", PASSWORD).await;
    assert!(b.form().patients.is_empty(), "the EHR chose the patient");
    b.decide("approve").await;
    let t: Value = exchange(&srv, &b.redirect_params()["code"], &[]).await.json().await.unwrap();
    assert_eq!(t["patient"], "ann");
    assert_eq!(t["encounter"], "enc-1");
    assert_eq!(t["need_patient_banner"], false);
    assert_eq!(t["fhirContext"][0]["reference"], "Encounter/enc-1");
    assert!(t["scope"].as_str().unwrap().split(' ').any(|s| s == "launch"));
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(read_as(&srv, access, "Encounter/enc-1").await, StatusCode::OK);
});

smart_backends!(ehr_launch_by_another_user_is_refused, |srv| {
    let ehr = ehr_user_token(&srv, "dr-smith").await;
    let launch: Value = register_launch(&srv, &ehr, &json!({"patient": "ann"})).await.json().await.unwrap();
    let mut a = Authorize::new(&srv, "launch openid patient/*.rs");
    a.launch = Some(launch["launch"].as_str().unwrap().into());
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("ann", PASSWORD).await;
    assert_eq!(b.redirect_params()["error"], "access_denied");
});

smart_backends!(ehr_launch_without_a_user_token_is_refused, |srv| {
    let backend = srv.client_credentials(ADMIN_CLIENT, ADMIN_SECRET, "system/*.rs").await;
    assert_eq!(register_launch(&srv, &backend, &json!({"patient": "ann"})).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(register_launch(&srv, "garbage", &json!({"patient": "ann"})).await.status(), StatusCode::UNAUTHORIZED);
});

smart_backends!(ehr_launch_into_a_missing_patient_is_refused, |srv| {
    let ehr = ehr_user_token(&srv, "dr-smith").await;
    assert_eq!(register_launch(&srv, &ehr, &json!({"patient": "nobody"})).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        register_launch(&srv, &ehr, &json!({"patient": "ann", "extra": 1})).await.status(),
        StatusCode::BAD_REQUEST
    );
});

// ---- CORS and discovery ------------------------------------------------------------------

smart_backends!(cors_allows_registered_app_origins_only, |srv| {
    let app_origin = "http://localhost:9000";
    let preflight = |origin: &'static str, url: String| {
        srv.anonymous()
            .request(reqwest::Method::OPTIONS, url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let r = preflight(app_origin, srv.url("Patient/ann")).await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], app_origin);
    assert!(r.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let r = preflight("https://evil.example", srv.url("Patient/ann")).await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight("https://evil.example", format!("{}/auth/token", srv.root)).await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The token response to a browser app carries its origin.
    let code = code_for(&srv, &Authorize::new(&srv, PATIENT_SCOPES), "ann").await;
    let form = owned(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", APP_REDIRECT),
        ("client_id", APP),
        ("code_verifier", VERIFIER),
    ]);
    let r = srv
        .anonymous()
        .post(format!("{}/auth/token", srv.root))
        .header("Origin", app_origin)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], app_origin);
    // metadata is open to all
    let r = srv.anonymous().get(srv.url("metadata")).header("Origin", "https://any.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // the login pages are for no other origin
    let r = preflight(app_origin, format!("{}/auth/login", srv.root)).await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
});

smart_backends!(discovery_lists_every_capability_the_server_has, |srv| {
    let smart: Value =
        srv.anonymous().get(srv.url(".well-known/smart-configuration")).send().await.unwrap().json().await.unwrap();
    for c in [
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
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
    ] {
        assert!(smart["capabilities"].as_array().unwrap().iter().any(|x| x == c), "{c}");
    }
    for g in ["authorization_code", "client_credentials", "refresh_token"] {
        assert!(smart["grant_types_supported"].as_array().unwrap().iter().any(|x| x == g), "{g}");
    }
    assert_eq!(smart["authorization_endpoint"], format!("{}/auth/authorize", srv.root));
    assert_eq!(smart["issuer"], format!("{}/auth", srv.root));
    let oidc: Value = srv
        .anonymous()
        .get(format!("{}/.well-known/openid-configuration", smart["issuer"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for f in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
    ] {
        assert!(oidc[f].is_string() || oidc[f].is_array(), "{f}");
    }
    assert!(oidc["id_token_signing_alg_values_supported"].as_array().unwrap().iter().any(|a| a == "RS256"));
    // SMART v1 clients read the oauth-uris extension of the CapabilityStatement.
    let cs: Value = srv.anonymous().get(srv.url("metadata")).send().await.unwrap().json().await.unwrap();
    let ext = &cs["rest"][0]["security"]["extension"][0];
    assert_eq!(ext["url"], "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
    let uris: HashMap<String, String> = ext["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["url"].as_str().unwrap().to_string(), e["valueUri"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(uris["authorize"], smart["authorization_endpoint"].as_str().unwrap());
    assert_eq!(uris["token"], smart["token_endpoint"].as_str().unwrap());
});

// ---- purpose of use ------------------------------------------------------------------------

async fn introspect(srv: &Server, token: &str) -> Value {
    srv.anonymous()
        .post(format!("{}/auth/introspect", srv.root))
        .bearer_auth(token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode(&owned(&[("token", token)])))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn with_purpose(srv: &Server, user: &str, purpose: &str) -> Browser {
    let mut a = Authorize::new(srv, "launch/patient patient/*.rs");
    a.extra.push(("purpose_of_use".into(), purpose.into()));
    let mut b = Browser::authorize(srv, &a).await;
    b.login(user, PASSWORD).await;
    b
}

smart_backends!(purpose_of_use_defaults_to_treat, |srv| {
    let t = tokens_for(&srv, "launch/patient patient/*.rs", "ann").await;
    assert_eq!(introspect(&srv, t["access_token"].as_str().unwrap()).await["purpose_of_use"], "TREAT");
});

smart_backends!(allowed_purpose_of_use_is_carried_by_the_token_and_its_refresh, |srv| {
    let mut a = Authorize::new(&srv, "launch/patient offline_access patient/*.rs");
    a.extra.push(("purpose_of_use".into(), "ETREAT".into()));
    let mut b = Browser::authorize(&srv, &a).await;
    b.login("dr-smith", PASSWORD).await;
    b.decide("approve").await;
    let t: Value = exchange(&srv, &b.redirect_params()["code"], &[]).await.json().await.unwrap();
    assert_eq!(introspect(&srv, t["access_token"].as_str().unwrap()).await["purpose_of_use"], "ETREAT");
    let n: Value = refresh(&srv, t["refresh_token"].as_str().unwrap(), None, APP).await.json().await.unwrap();
    assert_eq!(introspect(&srv, n["access_token"].as_str().unwrap()).await["purpose_of_use"], "ETREAT");
});

smart_backends!(purpose_of_use_the_user_may_not_assert_is_access_denied, |srv| {
    let b = with_purpose(&srv, "ann", "ETREAT").await;
    assert_eq!(b.redirect_params()["error"], "access_denied");
});

smart_backends!(break_the_glass_without_the_right_is_access_denied, |srv| {
    let b = with_purpose(&srv, "ann", "BTG").await;
    assert_eq!(b.redirect_params()["error"], "access_denied");
    // a user with break_glass = true gets it
    let mut b = with_purpose(&srv, "dr-smith", "BTG").await;
    assert!(b.form().has_decision);
    b.decide("approve").await;
    let t: Value = exchange(&srv, &b.redirect_params()["code"], &[]).await.json().await.unwrap();
    assert_eq!(introspect(&srv, t["access_token"].as_str().unwrap()).await["purpose_of_use"], "BTG");
});

smart_backends!(unknown_purpose_of_use_is_access_denied, |srv| {
    let b = with_purpose(&srv, "dr-smith", "EVERYTHING").await;
    assert_eq!(b.redirect_params()["error"], "access_denied");
});

smart_backends!(backend_purpose_of_use_beyond_the_client_is_refused, |srv| {
    let form = owned(&[("grant_type", "client_credentials"), ("scope", "system/*.rs"), ("purpose_of_use", "HRESCH")]);
    oauth_error(token_post(&srv, &form, Some((ADMIN_CLIENT, ADMIN_SECRET))).await, &[400], "invalid_request").await;
    let form = owned(&[("grant_type", "client_credentials"), ("scope", "system/*.rs"), ("purpose_of_use", "TREAT")]);
    let t: Value = token_post(&srv, &form, Some((ADMIN_CLIENT, ADMIN_SECRET))).await.json().await.unwrap();
    assert_eq!(introspect(&srv, t["access_token"].as_str().unwrap()).await["purpose_of_use"], "TREAT");
});

smart_backends!(id_token_echoes_the_nonce_of_the_authorization_request, |srv| {
    let mut a = Authorize::new(&srv, "launch/patient openid fhirUser patient/*.rs");
    a.extra.push(("nonce".into(), "n-0S6_WzA2Mj".into()));
    let code = code_for(&srv, &a, "ann").await;
    let t: Value = exchange(&srv, &code, &[]).await.json().await.unwrap();
    assert_eq!(claims_of(t["id_token"].as_str().unwrap())["nonce"], "n-0S6_WzA2Mj");
});
