//! Configuration: the TOML file of INTERFACE.md, overridden by `BASTION_<SECTION>__<KEY>`
//! environment variables. Unknown keys are an error at start: a misspelt security setting
//! must never be silently ignored.

use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: Option<TlsConfig>,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub clients: Vec<ClientConfig>,
    pub users: Vec<UserConfig>,
    pub roles: Vec<RoleConfig>,
    /// Attribute rules (`[[rules]]`), see docs/access-control.md.
    pub rules: Vec<RuleConfig>,
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    pub signers: Vec<SignerConfig>,
    /// Security labels, see docs/privacy.md.
    pub privacy: PrivacyConfig,
    /// The labelling service's rules (`[[labelling]]`), see docs/privacy.md.
    pub labelling: Vec<LabellingConfig>,
    /// Masking rules (`[[masking]]`), see docs/privacy.md.
    pub masking: Vec<MaskingConfig>,
}

/// One `[[masking]]` table: for callers with one of `roles`, the named top-level elements
/// of `types` are masked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    pub name: String,
    pub types: Vec<String>,
    pub elements: Vec<String>,
    pub roles: Vec<String>,
}

/// One `[[labelling]]` table, checked by `bastion_policy::LabellingRule::from_spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabellingConfig {
    pub name: String,
    pub types: Vec<String>,
    pub codes: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub confidentiality: Option<String>,
}

impl Config {
    /// The masking rules, checked: known types, real elements, defined roles.
    pub fn masking_rules(&self) -> Result<Vec<bastion_policy::redaction::MaskingRule>, String> {
        let mut out = Vec::new();
        for m in &self.masking {
            let err = |reason: String| format!("masking rule {}: {reason}", m.name);
            if m.types.is_empty() || m.elements.is_empty() || m.roles.is_empty() {
                return Err(err("needs types, elements and roles".into()));
            }
            for t in &m.types {
                if !bastion_fhir::definitions::is_resource_type(t) {
                    return Err(err(format!("{t} is not an R4 resource type")));
                }
                for e in &m.elements {
                    if matches!(e.as_str(), "id" | "meta" | "resourceType")
                        || bastion_fhir::definitions::type_definition(t)
                            .and_then(|d| d.root_table().lookup(e))
                            .is_none()
                    {
                        return Err(err(format!("{t} has no element {e} that can be masked")));
                    }
                }
            }
            for r in &m.roles {
                if !self.roles.iter().any(|role| &role.name == r) {
                    return Err(err(format!("names an unknown role {r}")));
                }
            }
            out.push(bastion_policy::redaction::MaskingRule {
                name: m.name.clone(),
                types: m.types.clone(),
                elements: m.elements.clone(),
                roles: m.roles.clone(),
            });
        }
        Ok(out)
    }

    /// The labelling rules, checked.
    pub fn labelling_rules(&self) -> Result<Vec<bastion_policy::LabellingRule>, String> {
        self.labelling
            .iter()
            .map(|l| {
                bastion_policy::LabellingRule::from_spec(bastion_policy::LabellingSpec {
                    name: l.name.clone(),
                    types: l.types.clone(),
                    codes: l.codes.clone(),
                    labels: l.labels.clone(),
                    confidentiality: l.confidentiality.clone(),
                })
                .map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// `[privacy]`: how security labels are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The confidentiality of a resource without a confidentiality label.
    pub default_confidentiality: String,
    /// Per-type defaults (`{ Consent = "R" }`).
    pub confidentiality_by_type: std::collections::BTreeMap<String, String>,
    /// The highest confidentiality break the glass reveals (`R`, or `V`).
    pub break_glass_ceiling: String,
    /// What applies where no Consent speaks: `opt-out` (share what the access rules allow
    /// unless a Consent denies) or `opt-in` (share nothing of a patient's record without
    /// their permit).
    pub consent_base: String,
    /// Tell users allowed to break the glass, when a read or search withheld something that
    /// breaking it would reveal (R4's `suppressed` break-the-glass OperationOutcome). Off by
    /// default: the hint itself says that something exists.
    pub hint_break_glass: bool,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            default_confidentiality: "N".into(),
            confidentiality_by_type: Default::default(),
            break_glass_ceiling: "R".into(),
            consent_base: "opt-out".into(),
            hint_break_glass: false,
        }
    }
}

impl PrivacyConfig {
    pub fn consent_base(&self) -> Result<bastion_policy::consent::BasePolicy, String> {
        match self.consent_base.as_str() {
            "opt-out" => Ok(bastion_policy::consent::BasePolicy::OptOut),
            "opt-in" => Ok(bastion_policy::consent::BasePolicy::OptIn),
            _ => Err("privacy.consent_base must be opt-out or opt-in".into()),
        }
    }

    pub fn label_policy(&self) -> Result<bastion_policy::LabelPolicy, String> {
        use bastion_fhir::labels::Confidentiality;
        let level = |key: &str, code: &str| {
            Confidentiality::parse(code).ok_or_else(|| format!("privacy.{key} must be one of U, L, M, N, R, V"))
        };
        let mut by_type = std::collections::BTreeMap::new();
        for (t, code) in &self.confidentiality_by_type {
            if !bastion_fhir::definitions::is_resource_type(t) {
                return Err(format!("privacy.confidentiality_by_type: {t} is not an R4 resource type"));
            }
            by_type.insert(t.clone(), level("confidentiality_by_type", code)?);
        }
        let ceiling = level("break_glass_ceiling", &self.break_glass_ceiling)?;
        if ceiling < Confidentiality::R {
            return Err("privacy.break_glass_ceiling must be R or V".into());
        }
        Ok(bastion_policy::LabelPolicy {
            default_confidentiality: level("default_confidentiality", &self.default_confidentiality)?,
            confidentiality_by_type: by_type,
            break_glass_ceiling: ceiling,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Defaults to `http://{listen}` (with the real port when `listen` asks for port 0).
    pub public_url: Option<String>,
    /// Where the server keeps its keys (and, by default, its SQLite database).
    pub data_dir: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: "127.0.0.1:8080".into(), public_url: None, data_dir: "bastion-data".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub url: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { url: "sqlite://bastion-data/bastion.db".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Development only: the FHIR API answers without a token. Warned about at every start.
    pub disabled: bool,
    /// Resource types of the Anonymous security category (ValueSet, CodeSystem,
    /// StructureDefinition, ...) that may be read and searched without a token. Default: none.
    pub anonymous_read: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 7_776_000,
            disabled: false,
            anonymous_read: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_bundle_entries: usize,
    pub max_count: usize,
    pub max_chain_depth: usize,
    pub requests_per_second: u32,
    pub failed_logins_before_lockout: u32,
    /// Deepest JSON nesting accepted in a resource body.
    pub max_json_depth: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_bundle_entries: 10_000,
            max_count: 1000,
            max_chain_depth: 4,
            requests_per_second: 1000,
            failed_logins_before_lockout: 5,
            max_json_depth: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub scopes: String,
    pub secret: Option<String>,
    pub jwks: Option<String>,
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub purposes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The organization a backend client acts within (`Organization/[id]`), for attribute rules.
    pub organization: Option<String>,
    pub clearance: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    pub password: String,
    pub fhir_user: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub organization: Option<String>,
    pub clearance: Option<String>,
    #[serde(default)]
    pub purposes: Vec<String>,
    #[serde(default)]
    pub break_glass: bool,
}

/// One `[[rules]]` table: an attribute rule, checked by `bastion_policy::Rule::from_spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// `allow` or `deny`.
    pub effect: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub organizations: Vec<String>,
    #[serde(default)]
    pub types: Vec<String>,
    /// Letters of `cruds`; all when absent.
    pub actions: Option<String>,
    /// `same`: created within the caller's own organization.
    pub organization: Option<String>,
    #[serde(default)]
    pub patients: Vec<String>,
    #[serde(default)]
    pub security: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl RuleConfig {
    pub fn to_rule(&self) -> Result<bastion_policy::Rule, bastion_policy::RuleError> {
        bastion_policy::Rule::from_spec(bastion_policy::RuleSpec {
            name: self.name.clone(),
            effect: self.effect.clone(),
            roles: self.roles.clone(),
            organizations: self.organizations.clone(),
            types: self.types.clone(),
            actions: self.actions.clone(),
            organization: self.organization.clone(),
            patients: self.patients.clone(),
            security: self.security.clone(),
            tags: self.tags.clone(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub sensitivity: Vec<String>,
    #[serde(default)]
    pub label_admin: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks_uri: Option<String>,
    /// The claim holding the scopes (default `scope`; `scp` arrays are read as well).
    pub scope_claim: Option<String>,
    /// The claim holding the FHIR user reference (default `fhirUser`).
    pub fhir_user_claim: Option<String>,
    /// The claim holding the patient in context (default `patient`; `Patient/` is stripped).
    pub patient_claim: Option<String>,
    /// Where the user's roles are, a dotted path (`realm_access.roles` for Keycloak, `groups`
    /// for Okta); roles not defined in `[[roles]]` are ignored. Default: no roles.
    pub roles_claim: Option<String>,
    /// Where the user's organization is (`Organization/[id]` or a bare id), a dotted path.
    pub organization_claim: Option<String>,
    /// Where the user's clearance is (`U`..`V`), a dotted path. Default: clearance N; a
    /// configured claim that is missing or not a level gives U.
    pub clearance_claim: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    pub who: String,
    pub jwks: String,
}

/// An environment value as TOML when it parses as a TOML value (numbers, booleans,
/// arrays), otherwise as a plain string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

impl Config {
    /// Reads the file (if any), applies `BASTION_<SECTION>__<KEY>` overrides from `env`,
    /// and checks the result. Variables without `__` (e.g. `BASTION_TEST_POSTGRES_URL`) are
    /// not configuration and are left alone.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Invalid(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("BASTION_") else { continue };
            let Some((section, key)) = rest.split_once("__") else { continue };
            let section = section.to_ascii_lowercase();
            let key = key.to_ascii_lowercase();
            let entry = table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(t) = entry.as_table_mut() else {
                return Err(ConfigError::Invalid(format!("{name}: [{section}] is not a table")));
            };
            t.insert(key, env_value(&value));
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let s = &self.storage.url;
        if !(s.starts_with("sqlite://") || s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid("storage.url must start with sqlite:// or postgres://".into()));
        }
        if self.limits.max_count == 0 || self.limits.max_bundle_entries == 0 || self.limits.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits: max_count and max_bundle_entries must be at least 1, max_body_bytes at least 1024".into(),
            ));
        }
        if let Some(url) = &self.server.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid("server.public_url must be an http:// or https:// URL".into()));
        }
        for c in &self.clients {
            if !matches!(c.kind.as_str(), "public" | "confidential" | "backend") {
                return Err(ConfigError::Invalid(format!(
                    "client {}: kind must be public, confidential or backend",
                    c.id
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                let p = std::env::temp_dir().join(format!("bastion-config-{}.toml", uuid::Uuid::new_v4()));
                std::fs::write(&p, text).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.storage.url, "sqlite://bastion-data/bastion.db");
        assert_eq!(c.limits.max_count, 1000);
    }

    #[test]
    fn rejects_unknown_key() {
        let f = write("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n");
        let e = Config::load(Some(&f.0), Vec::new()).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn rejects_unknown_section() {
        let f = write("[sever]\nlisten = \"127.0.0.1:1\"\n");
        assert!(Config::load(Some(&f.0), Vec::new()).is_err());
    }

    #[test]
    fn environment_overrides_file() {
        let f = write("[storage]\nurl = \"sqlite://a.db\"\n[limits]\nmax_count = 5\n");
        let env = vec![
            ("BASTION_STORAGE__URL".to_string(), "postgres://u@h/db".to_string()),
            ("BASTION_LIMITS__MAX_COUNT".to_string(), "7".to_string()),
            ("BASTION_TEST_POSTGRES_URL".to_string(), "ignored".to_string()),
        ];
        let c = Config::load(Some(&f.0), env).unwrap();
        assert_eq!(c.storage.url, "postgres://u@h/db");
        assert_eq!(c.limits.max_count, 7);
    }

    #[test]
    fn privacy_levels_are_checked_at_start() {
        let f = write("[privacy]\ndefault_confidentiality = \"L\"\nconfidentiality_by_type = { Consent = \"R\" }\n");
        let policy = Config::load(Some(&f.0), Vec::new()).unwrap().privacy.label_policy().unwrap();
        assert_eq!(policy.default_for("Observation"), bastion_fhir::labels::Confidentiality::L);
        assert_eq!(policy.default_for("Consent"), bastion_fhir::labels::Confidentiality::R);
        for bad in [
            "default_confidentiality = \"X\"",
            "confidentiality_by_type = { Consent = \"secret\" }",
            "confidentiality_by_type = { Consnet = \"R\" }",
            "break_glass_ceiling = \"N\"",
        ] {
            let f = write(&format!("[privacy]\n{bad}\n"));
            let c = Config::load(Some(&f.0), Vec::new()).unwrap();
            assert!(c.privacy.label_policy().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_unknown_key_from_environment() {
        let env = vec![("BASTION_LIMITS__MAX_COUNTT".to_string(), "7".to_string())];
        assert!(Config::load(None, env).is_err());
    }

    #[test]
    fn accepts_every_fixed_key_of_the_interface() {
        let f = write(
            r#"
[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
[storage]
url = "sqlite://bastion-data/bastion.db"
[auth]
access_token_ttl_secs = 3600
refresh_token_ttl_secs = 7776000
[limits]
max_body_bytes = 16777216
max_bundle_entries = 10000
max_count = 1000
max_chain_depth = 4
requests_per_second = 1000
failed_logins_before_lockout = 5
[[clients]]
id = "growth-chart"
kind = "public"
redirect_uris = ["http://localhost:9000/callback"]
scopes = "launch/patient openid fhirUser offline_access patient/*.rs"
secret = "s"
jwks = '{"keys":[]}'
jwks_uri = "https://x"
purposes = ["TREAT"]
roles = ["integration"]
clearance = "N"
[[users]]
username = "dr-smith"
password = "$argon2id$..."
fhir_user = "Practitioner/dr-smith"
roles = ["clinician"]
organization = "Organization/general-hospital"
clearance = "R"
purposes = ["TREAT", "ETREAT"]
break_glass = false
[[roles]]
name = "clinician"
permissions = ["user/*.cruds"]
sensitivity = ["PSY"]
label_admin = false
[[trusted_issuers]]
issuer = "https://idp.example.org/realms/fhir"
audience = "http://127.0.0.1:8080/fhir"
jwks_uri = "https://idp/jwks"
[[signers]]
who = "Practitioner/dr-smith"
jwks = '{"keys":[]}'
"#,
        );
        let c = Config::load(Some(&f.0), Vec::new()).unwrap();
        assert_eq!(c.clients[0].id, "growth-chart");
        assert_eq!(c.users[0].roles, vec!["clinician".to_string()]);
        assert!(c.tls.is_some());
    }
}
