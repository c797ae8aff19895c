//! The login, consent and error pages of the authorization endpoint, as HTML strings.
//!
//! Every value that reaches a page is escaped; the pages load nothing but their own
//! stylesheet and run no script. The form field names are fixed by INTERFACE.md: `username`
//! and `password`; `scope` checkboxes, the `patient` select and the `decision` buttons. The
//! hidden `request` and `csrf` inputs carry the pending authorization and its CSRF token.
//!
//! The headers that make the pages safe to show (CSP with `frame-ancestors 'none'`, no
//! caching, no referrer) are set by [`html_response`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub const STYLESHEET: &str =
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.4rem}form{display:flex;flex-direction:column;gap:.6rem}label{display:block}
input[type=text],input[type=password],select{padding:.4rem;font-size:1rem;width:100%;box-sizing:border-box}
fieldset{border:1px solid #ccc;border-radius:4px}.sub{margin-left:1.6rem;font-size:.9rem}
.error{color:#a00;font-weight:600}.buttons{display:flex;gap:1rem}button{padding:.5rem 1.2rem;font-size:1rem}
code{font-size:.85rem;word-break:break-all}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title><link rel=\"stylesheet\" href=\"/auth/assets/style.css\"></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    )
}

/// A page with the headers every authorization page carries. `form_action` lists the
/// origins the page's forms may end up at (Chromium applies `form-action` to the redirect
/// that follows a submission, so the consent page must allow the app's origin).
pub fn html_response(status: StatusCode, html: String, form_action: &[String]) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let mut actions = String::from("'self'");
    for origin in form_action {
        actions.push(' ');
        actions.push_str(origin);
    }
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {actions}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

fn hidden(request: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(request),
        esc(csrf)
    )
}

pub fn login(client: &str, request: &str, csrf: &str, error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "<p>The application <strong>{client}</strong> asks to access health records on your behalf.</p>{error}\
             <form method=\"post\" action=\"/auth/login\">{hidden}\
             <label>Username <input type=\"text\" name=\"username\" autocomplete=\"username\" required autofocus></label>\
             <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form>",
            client = esc(client),
            hidden = hidden(request, csrf),
        ),
    )
}

/// One checkbox on the consent page; `sub` ones are category sub-scopes (unticked).
pub struct ScopeChoice {
    pub scope: String,
    pub description: String,
    pub checked: bool,
    pub sub: bool,
}

pub struct ConsentPage<'a> {
    pub client: &'a str,
    pub user: &'a str,
    pub request: &'a str,
    pub csrf: &'a str,
    pub choices: Vec<ScopeChoice>,
    /// `(id, label)` when a patient must be chosen.
    pub patients: Option<Vec<(String, String)>>,
    pub offline: bool,
}

pub fn consent(p: &ConsentPage<'_>) -> String {
    let mut items = String::new();
    for c in &p.choices {
        items.push_str(&format!(
            "<label{class}><input type=\"checkbox\" name=\"scope\" value=\"{v}\"{checked}> {d} <code>{v}</code></label>",
            class = if c.sub { " class=\"sub\"" } else { "" },
            v = esc(&c.scope),
            checked = if c.checked { " checked" } else { "" },
            d = esc(&c.description),
        ));
    }
    let patients = match &p.patients {
        Some(list) => {
            let options: String = list
                .iter()
                .map(|(id, label)| format!("<option value=\"{}\">{}</option>", esc(id), esc(label)))
                .collect();
            format!("<label>Patient <select name=\"patient\" required>{options}</select></label>")
        }
        None => String::new(),
    };
    let offline = if p.offline {
        "<p>This application asks for <strong>offline access</strong>: it may keep accessing the records you \
         approve without you being signed in, until you revoke it.</p>"
    } else {
        ""
    };
    page(
        "Allow access?",
        &format!(
            "<p>Signed in as <strong>{user}</strong>. The application <strong>{client}</strong> asks for the access \
             below. Untick what you do not want to give; the indented choices give only part of a kind of record.</p>\
             {offline}<form method=\"post\" action=\"/auth/consent\">{hidden}<fieldset><legend>Access</legend>{items}</fieldset>\
             {patients}<div class=\"buttons\"><button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></div></form>",
            user = esc(p.user),
            client = esc(p.client),
            hidden = hidden(p.request, p.csrf),
        ),
    )
}

pub fn error(title: &str, message: &str) -> String {
    page(title, &format!("<p class=\"error\">{}</p>", esc(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_every_value() {
        let html = login("<script>alert(1)</script>", "\"><x", "c", Some("<b>"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("\"><x"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn consent_page_has_the_fixed_fields() {
        let html = consent(&ConsentPage {
            client: "app",
            user: "dr",
            request: "r",
            csrf: "c",
            choices: vec![ScopeChoice {
                scope: "patient/Observation.rs".into(),
                description: "Observation".into(),
                checked: true,
                sub: false,
            }],
            patients: Some(vec![("p1".into(), "Ann".into())]),
            offline: true,
        });
        for needle in [
            "name=\"scope\" value=\"patient/Observation.rs\" checked",
            "<select name=\"patient\"",
            "<option value=\"p1\">",
            "name=\"decision\" value=\"approve\"",
            "name=\"decision\" value=\"deny\"",
        ] {
            assert!(html.contains(needle), "{needle}");
        }
    }
}
