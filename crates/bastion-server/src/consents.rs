//! Patient Consent enforcement at request time: the active patient-privacy Consents on file
//! (and the CareTeams their actors name), loaded once per change, turned into each caller's
//! predicates by the pure `bastion_policy::consent`, and added to the caller's AccessScope.
//!
//! Freshness: every request asks the store for the latest change to a Consent or CareTeam
//! (one indexed query), so a Consent written on any node takes effect on the next request.
//! What it is not: the evaluation rules (bastion-policy) or their audit record (the
//! security-event sink gets one event per caller and change that a Consent narrows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bastion_policy::consent::{BasePolicy, Consent, ConsentAction, Requester};
use bastion_policy::{AccessScope, LabelPolicy};
use bastion_search::{AccessPredicate, SearchQuery};
use bastion_store::{Page, Store};
use serde_json::Value;

use crate::auth::Principal;
use crate::auth::events::{SecurityEvent, SecurityEventSink};
use crate::error::ApiError;

/// The most Consents (and CareTeams) loaded; beyond it the server refuses to guess and
/// answers 500 (a deployment that large needs a different index, not silent truncation).
const MAX_LOADED: usize = 200_000;
/// Compiled scopes kept per token; the map is cleared when it grows past this.
const MAX_CACHED_SCOPES: usize = 10_000;

struct OnFile {
    generation: i64,
    consents: Vec<Consent>,
    /// Every provision period's start and end, sorted: a decision made between two of them
    /// holds until the next (see [`OnFile::epoch`]).
    boundaries: Vec<i64>,
    /// CareTeam id -> its members' references.
    care_teams: HashMap<String, Vec<String>>,
}

/// token id -> ((generation, epoch), the token's scope with its Consents)
type ScopeCache = HashMap<String, ((i64, usize), Arc<AccessScope>)>;

pub struct ConsentEnforcer {
    base: BasePolicy,
    labels: LabelPolicy,
    on_file: Mutex<Option<Arc<OnFile>>>,
    scopes: Mutex<ScopeCache>,
}

impl ConsentEnforcer {
    pub fn new(base: BasePolicy, labels: LabelPolicy) -> ConsentEnforcer {
        ConsentEnforcer { base, labels, on_file: Mutex::new(None), scopes: Mutex::new(HashMap::new()) }
    }

    /// The caller's scope, narrowed by the Consents on file. Break the glass is not narrowed
    /// (it overrides Consent denies by definition; its requests are audited as such).
    pub async fn scope_of(
        &self,
        store: &dyn Store,
        principal: &Principal,
        events: &dyn SecurityEventSink,
    ) -> Result<Arc<AccessScope>, ApiError> {
        let Some(on_file) = self.applicable(store, &principal.purpose_of_use).await? else {
            return Ok(principal.access.clone());
        };
        let now = bastion_fhir::primitives::Instant::now().millis;
        let key = (on_file.generation, on_file.epoch(now));
        if let Some((k, scope)) = self.lock_scopes().get(&principal.token_id)
            && *k == key
        {
            return Ok(scope.clone());
        }
        let me = Who {
            fhir_user: principal.fhir_user.as_deref(),
            organization: principal.organization.as_deref(),
            purpose: &principal.purpose_of_use,
        };
        let who = |action| requester(&me, &on_file, action, now);
        let reading =
            bastion_policy::consent::predicate(&on_file.consents, &who(ConsentAction::Access), self.base, &self.labels);
        let changing = bastion_policy::consent::predicate(
            &on_file.consents,
            &who(ConsentAction::Correct),
            self.base,
            &self.labels,
        );
        let scope = if reading == AccessPredicate::AllowAll && changing == AccessPredicate::AllowAll {
            principal.access.clone()
        } else {
            events.record(SecurityEvent::ConsentRestricts {
                caller: format!("{}|{}", principal.client_id, principal.subject),
                patients: narrowed_patients(&reading),
            });
            Arc::new(principal.access.with_consent(reading, changing))
        };
        let mut scopes = self.lock_scopes();
        if scopes.len() >= MAX_CACHED_SCOPES {
            scopes.clear();
        }
        scopes.insert(principal.token_id.clone(), (key, scope.clone()));
        Ok(scope)
    }

    /// What a user may read of the patients' records under the Consents on file, for
    /// requests made for `purpose`: how the patient chooser and launch context stay within
    /// what the user's tokens will reach.
    pub async fn reading_predicate(&self, store: &dyn Store, who: &Who<'_>) -> Result<AccessPredicate, ApiError> {
        let Some(on_file) = self.applicable(store, who.purpose).await? else {
            return Ok(AccessPredicate::AllowAll);
        };
        let now = bastion_fhir::primitives::Instant::now().millis;
        let requester = requester(who, &on_file, ConsentAction::Access, now);
        Ok(bastion_policy::consent::predicate(&on_file.consents, &requester, self.base, &self.labels))
    }

    /// The Consents on file as they stand now, or `None` where none can narrow a request for
    /// `purpose`: break the glass overrides them, and under opt-out a store that never held
    /// a Consent or CareTeam has nothing to apply.
    async fn applicable(&self, store: &dyn Store, purpose: &str) -> Result<Option<Arc<OnFile>>, ApiError> {
        if purpose == "BTG" {
            return Ok(None);
        }
        let generation = store.latest_change(&["Consent", "CareTeam"]).await?;
        if generation == 0 && self.base == BasePolicy::OptOut {
            return Ok(None);
        }
        Ok(Some(self.on_file(store, generation).await?))
    }

    fn lock_scopes(&self) -> std::sync::MutexGuard<'_, ScopeCache> {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn on_file(&self, store: &dyn Store, generation: i64) -> Result<Arc<OnFile>, ApiError> {
        if let Some(f) = self.on_file.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && f.generation == generation
        {
            return Ok(f.clone());
        }
        let consents: Vec<Consent> = load_all(store, "Consent", &[("status".into(), "active".into())])
            .await?
            .iter()
            .filter_map(Consent::from_resource)
            .collect();
        let mut care_teams = HashMap::new();
        for team in load_all(store, "CareTeam", &[]).await? {
            let members = team
                .get("participant")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.pointer("/member/reference").and_then(Value::as_str).map(str::to_string))
                .collect();
            if let Some(id) = team.get("id").and_then(Value::as_str) {
                care_teams.insert(id.to_string(), members);
            }
        }
        let mut boundaries: Vec<i64> = consents.iter().flat_map(Consent::period_boundaries).collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        let f = Arc::new(OnFile { generation, consents, care_teams, boundaries });
        *self.on_file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
        Ok(f)
    }
}

impl OnFile {
    /// How many period boundaries lie at or before `now`: decisions cached in one epoch are
    /// made again in the next, so a Consent whose period starts or ends takes effect then,
    /// without any write.
    fn epoch(&self, now: i64) -> usize {
        self.boundaries.partition_point(|b| *b <= now)
    }
}

/// Every current resource of a type matching `params`, parsed.
async fn load_all(store: &dyn Store, t: &str, params: &[(String, String)]) -> Result<Vec<Value>, ApiError> {
    let query = SearchQuery::parse(t, params).map_err(|e| ApiError::Internal(e.to_string()))?;
    let page = Page { offset: 0, limit: MAX_LOADED + 1, with_total: false };
    let found = store.search(&AccessPredicate::AllowAll, &query, page).await?;
    if found.items.len() > MAX_LOADED {
        return Err(ApiError::Internal(format!("more than {MAX_LOADED} {t} resources to enforce")));
    }
    Ok(found.items.iter().filter_map(|v| v.body.as_deref().and_then(|b| serde_json::from_slice(b).ok())).collect())
}

/// Who is asking, as Consent actors name it.
pub struct Who<'a> {
    pub fhir_user: Option<&'a str>,
    pub organization: Option<&'a str>,
    pub purpose: &'a str,
}

/// The references that stand for the caller in Consent actors: its FHIR user, its
/// organization, and the CareTeams either of them is a member of.
fn requester(p: &Who<'_>, on_file: &OnFile, action: ConsentAction, now: i64) -> Requester {
    let mut references: Vec<String> = p.fhir_user.iter().chain(p.organization.iter()).map(|s| s.to_string()).collect();
    let own = references.clone();
    for (id, members) in &on_file.care_teams {
        if members.iter().any(|m| own.contains(m)) {
            references.push(format!("CareTeam/{id}"));
        }
    }
    Requester {
        references,
        purpose: p.purpose.to_string(),
        action,
        now,
        own_patient: p.fhir_user.and_then(|f| f.strip_prefix("Patient/")).map(str::to_string),
    }
}

/// The patients whose records a consent predicate narrows, for the audit event.
fn narrowed_patients(p: &AccessPredicate) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(p: &AccessPredicate, out: &mut Vec<String>) {
        match p {
            AccessPredicate::PatientCompartment(ps) => out.extend(ps.iter().cloned()),
            AccessPredicate::All(ps) | AccessPredicate::Any(ps) => ps.iter().for_each(|q| walk(q, out)),
            AccessPredicate::Not(q) => walk(q, out),
            _ => {}
        }
    }
    walk(p, &mut out);
    out.sort();
    out.dedup();
    out
}
