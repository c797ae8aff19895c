//! The authorization server's security events, typed, so that the audit trail can record each
//! one as an AuditEvent (login, token issued in the ITI-71 shape, token refused, refresh,
//! revocation, replay, consent, EHR launch) without parsing log lines.
//!
//! An event names who and what, never a secret: no token, code, password, verifier or client
//! secret; a token appears only as its id (`jti`). The default sink writes the events to the
//! server log; the audit trail plugs in its own [`SecurityEventSink`].

use std::net::IpAddr;

/// How a token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::AuthorizationCode => "authorization_code",
            Grant::RefreshToken => "refresh_token",
            Grant::ClientCredentials => "client_credentials",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityEvent {
    /// A user signed in on the login page.
    LoginSucceeded {
        user: String,
        client: String,
        address: Option<IpAddr>,
    },
    /// A sign-in failed; `user` is the name as typed (it may not exist).
    LoginFailed {
        user: String,
        client: String,
        address: Option<IpAddr>,
    },
    /// A sign-in was refused because the user or the address is locked out.
    LoginLocked {
        user: String,
        address: Option<IpAddr>,
    },
    ConsentApproved {
        user: String,
        client: String,
        scope: String,
    },
    ConsentDenied {
        user: String,
        client: String,
    },
    /// A token was issued; `token_id` is the access token's `jti`.
    TokenIssued {
        grant: Grant,
        client: String,
        user: Option<String>,
        token_id: String,
        scope: String,
        purpose: String,
    },
    /// The token endpoint refused a request; `check` names the check that failed.
    TokenRefused {
        grant: Option<String>,
        check: String,
    },
    /// An authorization code was presented a second time; its tokens were revoked.
    CodeReplayed {
        client: String,
        user: String,
    },
    /// A retired refresh token was presented again; its family was revoked.
    RefreshReplayed {
        client: String,
        user: String,
    },
    TokenRevoked {
        client: String,
        token_id: String,
        family: bool,
    },
    /// A bearer token was refused at the FHIR API or the launch endpoint.
    BearerRefused {
        check: String,
    },
    LaunchRegistered {
        user: String,
        patient: Option<String>,
        encounter: Option<String>,
    },
    /// A request made under break the glass (purpose `BTG`): an emergency override of
    /// Consent and sensitivity restrictions. `request` is the method and path, never the
    /// query or the body.
    EmergencyAccess {
        subject: String,
        client: String,
        token_id: String,
        request: String,
    },
    /// Patients' Consents narrow what a caller may reach (recorded once per caller and change
    /// to the Consents on file): who, and whose records.
    ConsentRestricts {
        caller: String,
        patients: Vec<String>,
    },
    /// A write changed a resource's security labels (`system|code`, before and after).
    LabelsChanged {
        resource: String,
        by: String,
        before: Vec<String>,
        after: Vec<String>,
    },
}

impl SecurityEvent {
    /// A short, stable name (for logs and audit subtypes).
    pub fn name(&self) -> &'static str {
        match self {
            SecurityEvent::LoginSucceeded { .. } => "login-success",
            SecurityEvent::LoginFailed { .. } => "login-failure",
            SecurityEvent::LoginLocked { .. } => "login-locked",
            SecurityEvent::ConsentApproved { .. } => "consent-approved",
            SecurityEvent::ConsentDenied { .. } => "consent-denied",
            SecurityEvent::TokenIssued { .. } => "token-issued",
            SecurityEvent::TokenRefused { .. } => "token-refused",
            SecurityEvent::CodeReplayed { .. } => "code-replayed",
            SecurityEvent::RefreshReplayed { .. } => "refresh-replayed",
            SecurityEvent::TokenRevoked { .. } => "token-revoked",
            SecurityEvent::BearerRefused { .. } => "bearer-refused",
            SecurityEvent::LaunchRegistered { .. } => "launch-registered",
            SecurityEvent::LabelsChanged { .. } => "labels-changed",
            SecurityEvent::ConsentRestricts { .. } => "consent-restricts",
            SecurityEvent::EmergencyAccess { .. } => "emergency-access",
        }
    }
}

/// Where security events go.
pub trait SecurityEventSink: Send + Sync {
    fn record(&self, event: SecurityEvent);
}

/// The default sink: one structured log line per event (replays and lockouts as warnings).
pub struct LogSink;

impl SecurityEventSink for LogSink {
    fn record(&self, event: SecurityEvent) {
        let name = event.name();
        match &event {
            SecurityEvent::CodeReplayed { .. }
            | SecurityEvent::RefreshReplayed { .. }
            | SecurityEvent::LoginLocked { .. }
            | SecurityEvent::EmergencyAccess { .. } => {
                tracing::warn!(event = name, detail = ?event, "security event");
            }
            _ => tracing::info!(event = name, detail = ?event, "security event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::*;
    use crate::auth::AuthService;
    use crate::config::{ClientConfig, Config};

    struct Recorder(Mutex<Vec<SecurityEvent>>);

    impl SecurityEventSink for Recorder {
        fn record(&self, event: SecurityEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    const SECRET: &str = "events-test-secret-0123456789";

    async fn service(recorder: Arc<Recorder>) -> Arc<AuthService> {
        let dir = std::env::temp_dir().join(format!("bastion-events-{}", uuid::Uuid::new_v4()));
        let mut config = Config::default();
        config.server.data_dir = dir.display().to_string();
        config.clients.push(ClientConfig {
            id: "ops".into(),
            kind: "confidential".into(),
            redirect_uris: Vec::new(),
            scopes: "system/*.rs".into(),
            secret: Some(SECRET.into()),
            jwks: None,
            jwks_uri: None,
            purposes: Vec::new(),
            roles: Vec::new(),
            organization: None,
            clearance: None,
        });
        let store = bastion_store::open(&format!("sqlite://{}/b.db", dir.display())).await.unwrap();
        Arc::new(AuthService::new(&config, "http://127.0.0.1:1", store).unwrap().with_events(recorder))
    }

    async fn token_request(auth: &Arc<AuthService>, secret: &str) -> serde_json::Value {
        use base64::Engine as _;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{secret}"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {basic}")).unwrap());
        let body = axum::body::Bytes::from_static(b"grant_type=client_credentials&scope=system%2F*.rs");
        let r = crate::auth::token(State(auth.clone()), headers, body).await;
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn token_endpoint_records_issued_and_refused_tokens_without_secrets() {
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let auth = service(recorder.clone()).await;
        let ok = token_request(&auth, SECRET).await;
        let access = ok["access_token"].as_str().unwrap().to_string();
        token_request(&auth, "a-wrong-secret-0123456789").await;
        let events = recorder.0.lock().unwrap().clone();
        assert_eq!(events.len(), 2, "{events:?}");
        match &events[0] {
            SecurityEvent::TokenIssued { grant, client, user, scope, .. } => {
                assert_eq!(*grant, Grant::ClientCredentials);
                assert_eq!(client, "ops");
                assert_eq!(*user, None);
                assert_eq!(scope, "system/*.rs");
            }
            other => panic!("{other:?}"),
        }
        match &events[1] {
            SecurityEvent::TokenRefused { grant, check } => {
                assert_eq!(grant.as_deref(), Some("client_credentials"));
                assert!(check.contains("credentials"), "{check}");
            }
            other => panic!("{other:?}"),
        }
        let all = format!("{events:?}");
        for secret in [access.as_str(), SECRET, "a-wrong-secret-0123456789"] {
            assert!(!all.contains(secret), "an event carries a secret");
        }
    }
}
