//! Executes an [`Interaction`] against the store, with the caller's access predicate, and
//! turns the outcome into a [`Reply`] that the HTTP edge or a Bundle entry can render.
//!
//! Write interactions take a [`StoreTx`] from the caller: a single request commits its own,
//! a transaction Bundle shares one across entries.

use std::sync::Arc;

use axum::http::StatusCode;
use bastion_fhir::bundle::BundleWriter;
use bastion_fhir::primitives::Instant;
use bastion_fhir::validate::{ValidationLimits, validate_resource};
use bastion_fhir::{Issue, IssueType, OperationOutcome};
use bastion_search::query::{ReferenceValue, parse_include, parse_sort};
use bastion_search::{AccessPredicate, AccessRow, Clause, Include, SearchError, SearchQuery};
use bastion_store::{HistoryLevel, HistoryQuery, Method, Page, Store, StoreTx, StoredVersion, interactions};
use serde_json::{Value, json};

use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::interaction::{Conditions, Interaction, PreferReturn, Target, parse_etag};
use crate::paging::PageSigner;
use bastion_fhir::labels::Confidentiality;
use bastion_policy::{AccessScope, Action, TestData};

use crate::auth::events::{SecurityEvent, SecurityEventSink};
use crate::labelling::{check_storable_labels, keep_held_labels, stamp_organization, test_data};

/// Who is asking and how: everything about a request except the interaction itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The predicate of the interaction being executed; set from `scope` by
    /// [`Engine::authorize`] for each interaction (and Bundle entry).
    pub access: AccessPredicate,
    /// What the caller may do; `None` for the server's own work and with authentication
    /// disabled (development).
    pub scope: Option<Arc<AccessScope>>,
    pub conditions: Conditions,
    pub prefer_return: PreferReturn,
    /// `Prefer: handling=strict`.
    pub strict: bool,
    /// Who is asking, as paging tokens are bound to it ("anonymous" until authentication).
    pub caller: String,
    /// `Type/id` of what the transaction this request belongs to creates or updates: a
    /// reference to one of them resolves even before that entry is written.
    pub pending: Arc<std::collections::BTreeSet<String>>,
    /// What the caller would reach if it broke the glass, where the deployment lets it know
    /// that something was withheld (`[privacy] hint_break_glass`).
    pub break_glass_probe: Option<Arc<AccessScope>>,
}

impl RequestContext {
    /// A context without restriction: the server's own work (import, demo data) and, until
    /// the policy layer lands, every request. There is deliberately no `Default`: access
    /// must always be chosen, never assumed.
    pub fn unrestricted() -> Self {
        RequestContext {
            access: AccessPredicate::AllowAll,
            scope: None,
            conditions: Conditions::default(),
            prefer_return: PreferReturn::default(),
            strict: false,
            caller: "anonymous".into(),
            pending: Default::default(),
            break_glass_probe: None,
        }
    }
}

/// The body of a reply.
#[derive(Debug, Clone)]
pub enum ReplyBody {
    None,
    /// Stored bytes, served as they are.
    Raw(Vec<u8>),
    Json(Value),
}

/// What an interaction produced, before it is rendered as HTTP or as a Bundle entry.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: ReplyBody,
    pub version: Option<u64>,
    pub last_modified: Option<Instant>,
    pub location: Option<String>,
    /// The body is the resource a write produced (so `Prefer: return` applies to it).
    pub is_write_result: bool,
}

impl Reply {
    pub(crate) fn raw(status: StatusCode, bytes: Vec<u8>) -> Self {
        Reply {
            status,
            body: ReplyBody::Raw(bytes),
            version: None,
            last_modified: None,
            location: None,
            is_write_result: false,
        }
    }

    fn of_version(status: StatusCode, v: &StoredVersion, base: &str) -> Self {
        Reply {
            status,
            body: v.body.clone().map_or(ReplyBody::None, ReplyBody::Raw),
            version: Some(v.version),
            last_modified: Some(v.last_updated),
            location: Some(format!("{base}/{}/{}/_history/{}", v.resource_type, v.id, v.version)),
            is_write_result: false,
        }
    }

    /// Applies `Prefer: return=` to the result of a write.
    pub fn apply_prefer(mut self, prefer: PreferReturn) -> Self {
        if !self.is_write_result {
            return self;
        }
        match prefer {
            PreferReturn::Representation => {}
            PreferReturn::Minimal => self.body = ReplyBody::None,
            PreferReturn::OperationOutcome => {
                let msg = match self.status {
                    StatusCode::CREATED => "created",
                    StatusCode::NO_CONTENT => "deleted",
                    _ => "ok",
                };
                self.body = ReplyBody::Json(OperationOutcome::ok(msg).to_json());
                if self.status == StatusCode::NO_CONTENT {
                    self.status = StatusCode::OK;
                }
            }
        }
        self
    }

    pub fn etag(&self) -> Option<String> {
        self.version.map(|v| format!("W/\"{v}\""))
    }
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    /// The FHIR base URL, `{public_url}/fhir`.
    pub base: String,
    pub limits: LimitsConfig,
    capability: Vec<u8>,
    pages: PageSigner,
    /// The deployment's label policy (per-type default confidentiality, for Bundle labels).
    labels: bastion_policy::LabelPolicy,
    /// Where label changes are reported.
    events: Arc<dyn SecurityEventSink>,
    /// The labelling service's rules, applied to every write's new content.
    labelling: Vec<bastion_policy::LabellingRule>,
    /// The patients' Consents, applied to every caller with a token (shared with the
    /// authorization server's patient chooser).
    consents: Arc<crate::consents::ConsentEnforcer>,
    /// `[[masking]]` rules, applied to what callers with their roles get.
    masking: Vec<bastion_policy::redaction::MaskingRule>,
}

/// Result parameters of search (never part of the query itself).
const SEARCH_RESULT_PARAMS: &[&str] = &["_count", "_page", "_total", "_format", "_pretty", "_summary", "_elements"];
/// Parameters recognised but not supported yet; lenient mode ignores them with a warning.
const HISTORY_PARAMS: &[&str] = &["_count", "_since", "_format", "_pretty", "_page_before", "_page_max"];

impl Engine {
    pub fn new(store: Arc<dyn Store>, base: String, limits: LimitsConfig, pages: PageSigner) -> Self {
        let capability = serde_json::to_vec(&crate::capability::capability_statement(&base)).unwrap_or_default();
        Engine {
            store,
            base,
            limits,
            capability,
            pages,
            labels: bastion_policy::LabelPolicy::default(),
            events: Arc::new(crate::auth::events::LogSink),
            labelling: Vec::new(),
            consents: Arc::new(crate::consents::ConsentEnforcer::new(Default::default(), Default::default())),
            masking: Vec::new(),
        }
    }

    /// The same engine with the deployment's masking rules.
    pub fn with_masking(mut self, rules: Vec<bastion_policy::redaction::MaskingRule>) -> Self {
        self.masking = rules;
        self
    }

    /// The Consent enforcer, for the authorization server.
    pub fn consents(&self) -> Arc<crate::consents::ConsentEnforcer> {
        self.consents.clone()
    }

    /// A caller's scope for this request: its token's, narrowed by the Consents on file now.
    pub async fn scope_of(&self, principal: &crate::auth::Principal) -> Result<Arc<AccessScope>, ApiError> {
        self.consents.scope_of(&*self.store, principal, &*self.events).await
    }

    /// The same engine with the labelling service's rules.
    pub fn with_labelling(mut self, rules: Vec<bastion_policy::LabellingRule>) -> Self {
        self.labelling = rules;
        self
    }

    /// The same engine under the deployment's label policy (default: `N` for every type) and
    /// `consent_base` for what no Consent speaks about (default: opt-out).
    pub fn with_privacy(
        mut self,
        labels: bastion_policy::LabelPolicy,
        consent_base: bastion_policy::consent::BasePolicy,
    ) -> Self {
        self.consents = Arc::new(crate::consents::ConsentEnforcer::new(consent_base, labels.clone()));
        self.labels = labels;
        self
    }

    /// Reports label changes to `sink` instead of the log.
    pub fn with_events(mut self, sink: Arc<dyn SecurityEventSink>) -> Self {
        self.events = sink;
        self
    }

    /// The confidentiality of a reply in a batch or transaction response: a resource's own
    /// label or its type's default (the type from its location), a Bundle's own label, `U`
    /// for an OperationOutcome or no body.
    pub(crate) fn reply_confidentiality(&self, reply: &Reply) -> Confidentiality {
        match &reply.body {
            ReplyBody::Raw(bytes) => {
                let resource_type = reply
                    .location
                    .as_deref()
                    .and_then(|l| l.strip_prefix(&self.base))
                    .and_then(|path| path.trim_start_matches('/').split('/').next());
                // A Bundle (a search entry) has no location and names its own mark.
                self.confidentiality_of(resource_type.unwrap_or(""), Some(bytes))
            }
            ReplyBody::Json(v) if v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") => {
                Confidentiality::U
            }
            ReplyBody::Json(v) => bastion_fhir::labels::confidentiality_of(v).unwrap_or_else(|| {
                self.labels.default_for(v.get("resourceType").and_then(Value::as_str).unwrap_or(""))
            }),
            ReplyBody::None => Confidentiality::U,
        }
    }

    /// The confidentiality of a stored body for a Bundle's high-water mark: its own label,
    /// or its type's default.
    pub(crate) fn confidentiality_of(&self, resource_type: &str, body: Option<&[u8]>) -> Confidentiality {
        body.and_then(bastion_fhir::labels::confidentiality_of_bytes)
            .unwrap_or_else(|| if body.is_some() { self.labels.default_for(resource_type) } else { Confidentiality::U })
    }

    fn validation_limits(&self) -> ValidationLimits {
        ValidationLimits { max_depth: self.limits.max_json_depth }
    }

    /// The caller's context for one interaction: 403 when the interaction is not granted on
    /// its type at all (before any data is touched), otherwise the access predicate the store
    /// applies for it.
    pub fn authorize(&self, ctx: &RequestContext, interaction: &Interaction) -> Result<RequestContext, ApiError> {
        let Some(scope) = &ctx.scope else {
            // Without a caller's scope (the server's own work, authentication disabled) a
            // search still leaves test data out unless it asks for it.
            return Ok(match interaction {
                Interaction::Search { params, .. } if test_data(params) == TestData::Excluded => RequestContext {
                    access: AccessPredicate::All(vec![ctx.access.clone(), bastion_policy::labels::not_test_data()])
                        .simplified(),
                    ..ctx.clone()
                },
                _ => ctx.clone(),
            });
        };
        let on_type = |t: &str, action: Action| self.granted(ctx, t, action);
        let every_type = |action: Action| -> Result<AccessPredicate, ApiError> {
            match scope.predicate_every_type(action) {
                AccessPredicate::DenyAll => Err(ApiError::Forbidden(format!(
                    "the token does not grant '{}' on every resource type, which a system-wide interaction needs",
                    action.letter()
                ))),
                p => Ok(p),
            }
        };
        let access = match interaction {
            Interaction::Capabilities | Interaction::Bundle { .. } => return Ok(ctx.clone()),
            Interaction::Read { resource_type, .. } | Interaction::VRead { resource_type, .. } => {
                on_type(resource_type, Action::Read)?
            }
            Interaction::Create { resource_type, .. } => on_type(resource_type, Action::Create)?,
            Interaction::Update { resource_type, .. } | Interaction::Patch { resource_type, .. } => {
                on_type(resource_type, Action::Update)?
            }
            Interaction::Delete { resource_type, .. } => on_type(resource_type, Action::Delete)?,
            Interaction::History { level, .. } => match level {
                HistoryLevel::Instance { resource_type, .. } => on_type(resource_type, Action::Read)?,
                HistoryLevel::Type { resource_type } => on_type(resource_type, Action::Search)?,
                HistoryLevel::System => every_type(Action::Search)?,
            },
            Interaction::Search { resource_type, params, .. } if resource_type == crate::interaction::SYSTEM_SEARCH => {
                every_type(Action::Search)?;
                scope.search_predicate_every_type(test_data(params))
            }
            Interaction::Search { resource_type, params, .. } => {
                match scope.search_predicate(resource_type, test_data(params)) {
                    AccessPredicate::DenyAll => on_type(resource_type, Action::Search)?,
                    p => p,
                }
            }
            Interaction::Everything { params, .. } => {
                // Each type under its own predicate: a granular scope or a rule on one type
                // narrows that type only; types the caller may not search are left out.
                let per_type: Vec<AccessPredicate> = everything_types(params)?
                    .iter()
                    .map(|t| {
                        AccessPredicate::All(vec![
                            AccessPredicate::ResourceType(vec![t.clone()]),
                            scope.predicate(t, Action::Search),
                        ])
                        .simplified()
                    })
                    .filter(|p| *p != AccessPredicate::DenyAll)
                    .collect();
                if per_type.is_empty() || !scope.allows("Patient", Action::Read) {
                    return Err(ApiError::Forbidden(
                        "the token does not grant reading the patient's record (Patient and the types of its compartment)"
                            .into(),
                    ));
                }
                AccessPredicate::Any(per_type).simplified()
            }
        };
        Ok(RequestContext { access, ..ctx.clone() })
    }

    /// The predicate for `action` on `resource_type`, or 403 when the caller may not do it
    /// at all (decided once: the predicate is the answer to both questions).
    fn granted(&self, ctx: &RequestContext, resource_type: &str, action: Action) -> Result<AccessPredicate, ApiError> {
        match self.access_of(ctx, resource_type, action) {
            AccessPredicate::DenyAll if ctx.scope.is_some() => {
                Err(ApiError::Forbidden(format!("the token does not grant '{}' on {resource_type}", action.letter())))
            }
            p => Ok(p),
        }
    }

    /// 403 unless the caller may do `action` on `resource_type` at all.
    pub fn may(&self, ctx: &RequestContext, resource_type: &str, action: Action) -> Result<(), ApiError> {
        self.granted(ctx, resource_type, action).map(|_| ())
    }

    /// The predicate for resources of a type that a request reaches besides its own
    /// (`_include` and `_revinclude` read them; conditional references in a transaction
    /// search them): what `action` on that type allows, or nothing.
    pub fn access_of(&self, ctx: &RequestContext, resource_type: &str, action: Action) -> AccessPredicate {
        match &ctx.scope {
            None => ctx.access.clone(),
            Some(s) => s.predicate(resource_type, action),
        }
    }

    /// A write must stay inside what the caller may write: the new content must lie in its
    /// reach (a patient token cannot create or move a record into another patient's
    /// compartment, a clinician cannot write outside their organization's records), and an
    /// existing version it replaces must be one it can see (a hidden one is answered as
    /// absent). The new content of a caller with a token first gets the server-held
    /// organization tag (see [`stamp_organization`]), so that the check sees what will be
    /// stored.
    pub(crate) fn check_write(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource_type: &str,
        id: &str,
        new: Option<&mut Value>,
        old: Option<&StoredVersion>,
    ) -> Result<(), ApiError> {
        // Every write's content is labelled from what it says, whoever writes it.
        let mut new = new;
        if let Some(body) = new.as_deref_mut() {
            bastion_policy::labelling::apply(&self.labelling, resource_type, body);
        }
        // The server's own work (`bastion import`, demo data) writes what it is given: an
        // export of another deployment keeps its stamps.
        let Some(scope) = ctx.scope.as_deref() else { return Ok(()) };
        let new = new.map(|body| {
            stamp_organization(scope.organization(), body, old);
            if let Some(change) = keep_held_labels(scope.clearance().label_admin(), body, old) {
                self.events.record(SecurityEvent::LabelsChanged {
                    resource: format!("{resource_type}/{id}"),
                    by: ctx.caller.clone(),
                    before: change.0,
                    after: change.1,
                });
            }
            &*body
        });
        let access = self.access_of(ctx, resource_type, action);
        // New content lies within the caller's reach before labels: it may write what its
        // labels then hide from it (a note the labelling service marks PSY, say).
        let reach = scope.write_reach(resource_type, action);
        if let Some(old) = old.filter(|o| !o.is_deleted()) {
            let content: Option<Value> = if access.needs_content() {
                old.body.as_deref().and_then(|b| serde_json::from_slice(b).ok())
            } else {
                None
            };
            let row = AccessRow {
                resource_type,
                id,
                compartments: &old.compartments,
                resource: content.as_ref(),
                referrers: &[],
            };
            if !access.admits(&row) {
                return Err(ApiError::NotFound(format!("{resource_type}/{id} is not known")));
            }
        }
        if let Some(body) = new
            && !reach.admits(&AccessRow {
                resource_type,
                id,
                compartments: &bastion_search::index::patient_compartments(body),
                resource: Some(body),
                // A write never reaches a resource through the references of others: a
                // patient-scoped caller may read a referenced Practitioner, not change it.
                referrers: &[],
            })
        {
            return Err(ApiError::Forbidden(format!(
                "the {resource_type} would lie outside the records this token may write"
            )));
        }
        Ok(())
    }

    /// A write may not point at what the caller cannot read: every relative reference in the
    /// new content (`Type/id`, version-specific too) to a type the caller does not see
    /// entirely must resolve to a resource it may read, or to one its transaction writes. A
    /// missing target and a hidden one are refused alike, so the answer reveals nothing.
    /// Where the caller sees every resource of the type (and for the server's own work)
    /// nothing can be hidden, and FHIR's freedom of dangling references stays.
    pub(crate) async fn check_references(
        &self,
        tx: &mut dyn StoreTx,
        ctx: &RequestContext,
        body: &Value,
    ) -> Result<(), ApiError> {
        // The server's own work keeps FHIR's freedom of dangling references.
        let Some(scope) = ctx.scope.as_deref() else { return Ok(()) };
        // Every reference by type, then one query per type that the caller does not see
        // entirely.
        let mut targets: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        collect_references(body, &mut |t, id| {
            if !ctx.pending.contains(&format!("{t}/{id}")) {
                targets.entry(t.to_string()).or_default().insert(id.to_string());
            }
        });
        for (t, ids) in targets {
            // Labels do not count here: where the caller reaches every resource of the type
            // but for those its labels hide, a reference to a hidden one is accepted exactly
            // like a dangling one, so the answer tells nothing either way.
            if scope.write_reach(&t, Action::Read) == AccessPredicate::AllowAll {
                continue;
            }
            let access = self.access_of(ctx, &t, Action::Read);
            let found: std::collections::BTreeSet<String> = if bastion_fhir::definitions::is_resource_type(&t) {
                let q = SearchQuery {
                    resource_type: t.clone(),
                    clauses: vec![Clause::Id(ids.iter().cloned().collect())],
                    ..SearchQuery::default()
                };
                tx.find_ids(&access, &q, ids.len()).await?.into_iter().collect()
            } else {
                Default::default()
            };
            if let Some(id) = ids.iter().find(|id| !found.contains(*id)) {
                return Err(ApiError::Unprocessable(vec![Issue::error(
                    IssueType::Processing,
                    format!("the reference {t}/{id} does not resolve to a resource this token may read"),
                )]));
            }
        }
        Ok(())
    }

    /// Runs one interaction on its own (writes commit before this returns).
    pub async fn execute(&self, ctx: &RequestContext, interaction: Interaction) -> Result<Reply, ApiError> {
        // Writes are authorized by `write`, which Bundle entries reach directly too.
        let ctx = &if interaction.is_write() { ctx.clone() } else { self.authorize(ctx, &interaction)? };
        match interaction {
            Interaction::Capabilities => Ok(Reply::raw(StatusCode::OK, self.capability.clone())),
            Interaction::Read { resource_type, id } => match self.read(ctx, &resource_type, &id).await {
                Err(ApiError::NotFound(m)) if self.withheld_read(ctx, &resource_type, &id).await? => {
                    Err(ApiError::Withheld(m))
                }
                other => other,
            },
            Interaction::VRead { resource_type, id, version } => {
                match self.store.vread(&ctx.access, &resource_type, &id, version).await? {
                    None => Err(ApiError::NotFound(format!("{resource_type}/{id}/_history/{version} is not known"))),
                    Some(v) if v.is_deleted() => Err(ApiError::Gone { resource_type, id, version }),
                    Some(v) => Ok(self.version_reply(ctx, StatusCode::OK, &v)),
                }
            }
            Interaction::History { level, params } => self.history(ctx, level, &params).await,
            Interaction::Search { resource_type, params, compartment } => {
                let listing = match &compartment {
                    Some(p) => Listing::Compartment(p),
                    None => Listing::Plain,
                };
                self.search(ctx, &resource_type, &params, listing).await
            }
            Interaction::Everything { id, params } => self.everything(ctx, &id, &params).await,
            // Boxed: a batch entry runs through `execute` again.
            Interaction::Bundle { body } => Box::pin(crate::bundle::process(self, ctx, body)).await,
            write => {
                let mut tx = self.store.begin().await?;
                let reply = self.write(&mut *tx, ctx, write).await?;
                tx.commit().await?;
                Ok(reply)
            }
        }
    }

    async fn read(&self, ctx: &RequestContext, resource_type: &str, id: &str) -> Result<Reply, ApiError> {
        let Some(v) = self.store.read(&ctx.access, resource_type, id).await? else {
            return Err(ApiError::NotFound(format!("{resource_type}/{id} is not known")));
        };
        if v.is_deleted() {
            return Err(ApiError::Gone { resource_type: resource_type.into(), id: id.into(), version: v.version });
        }
        let mut reply = self.version_reply(ctx, StatusCode::OK, &v);
        let not_modified = ctx.conditions.if_none_match.as_deref().and_then(parse_etag) == Some(v.version)
            || ctx
                .conditions
                .if_modified_since
                .is_some_and(|since| v.last_updated.millis / 1000 <= since.millis / 1000);
        if not_modified {
            reply.status = StatusCode::NOT_MODIFIED;
            reply.body = ReplyBody::None;
        }
        Ok(reply)
    }

    /// The caller's context as it would be under break the glass, if the deployment tells
    /// callers allowed to break the glass that something was withheld.
    fn probe_ctx(&self, ctx: &RequestContext) -> Option<RequestContext> {
        let probe = ctx.break_glass_probe.clone()?;
        Some(RequestContext { scope: Some(probe), break_glass_probe: None, ..ctx.clone() })
    }

    /// Would breaking the glass reveal the resource a read did not find?
    async fn withheld_read(&self, ctx: &RequestContext, resource_type: &str, id: &str) -> Result<bool, ApiError> {
        let Some(probe) = self.probe_ctx(ctx) else { return Ok(false) };
        let read = Interaction::Read { resource_type: resource_type.into(), id: id.into() };
        let Ok(probe) = self.authorize(&probe, &read) else { return Ok(false) };
        Ok(self.store.read(&probe.access, resource_type, id).await?.is_some_and(|v| !v.is_deleted()))
    }

    /// Checks a resource body for a write to `resource_type` (and, on PUT, `id`).
    pub fn check_body(&self, body: &Value, resource_type: &str, id: Option<&str>) -> Result<(), ApiError> {
        let Some(obj) = body.as_object() else {
            return Err(ApiError::invalid(
                IssueType::Structure,
                "the body must be a JSON object (a FHIR resource)",
                None,
            ));
        };
        match obj.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == resource_type => {}
            Some(t) => {
                return Err(ApiError::invalid(
                    IssueType::Invalid,
                    format!("resourceType '{t}' does not match the URL's '{resource_type}'"),
                    Some("resourceType"),
                ));
            }
            None => {
                return Err(ApiError::invalid(IssueType::Required, "resourceType is missing", Some("resourceType")));
            }
        }
        if let Some(url_id) = id {
            match obj.get("id").and_then(Value::as_str) {
                Some(body_id) if body_id == url_id => {}
                Some(body_id) => {
                    return Err(ApiError::invalid(
                        IssueType::Invalid,
                        format!("the id in the body ('{body_id}') does not match the id in the URL ('{url_id}')"),
                        Some(&format!("{resource_type}.id")),
                    ));
                }
                None => {
                    return Err(ApiError::invalid(
                        IssueType::Required,
                        "an update must carry the resource id in the body",
                        Some(&format!("{resource_type}.id")),
                    ));
                }
            }
        }
        validate_resource(body, &self.validation_limits()).map_err(ApiError::BadRequest)?;
        check_storable_labels(body)
    }

    /// Matches a conditional search inside the transaction: up to two ids.
    async fn matches(
        &self,
        tx: &mut dyn StoreTx,
        ctx: &RequestContext,
        resource_type: &str,
        query: &str,
    ) -> Result<Vec<String>, ApiError> {
        let mut q = SearchQuery::parse_conditional(resource_type, query)?;
        self.scope_reached(ctx, &mut q)?;
        Ok(tx.find_ids(&ctx.access, &q, 2).await?)
    }

    /// Chains and `_has` look into other types: the caller must be allowed to search each
    /// (403 otherwise), and their rows are matched under its predicate for that type, so that
    /// they cannot be used as an oracle on what it may not see.
    pub(crate) fn scope_reached(&self, ctx: &RequestContext, query: &mut SearchQuery) -> Result<(), ApiError> {
        if ctx.scope.is_none() {
            return Ok(());
        }
        let mut reached = Vec::new();
        for t in query.reached_types() {
            let predicate = self.granted(ctx, &t, Action::Search)?;
            reached.push((t, predicate));
        }
        query.reached_access = Some(reached);
        Ok(())
    }

    pub fn written_reply(&self, ctx: &RequestContext, status: StatusCode, v: &StoredVersion) -> Reply {
        let mut r = self.version_reply(ctx, status, v);
        r.is_write_result = true;
        r
    }

    /// A version as the caller gets it: redacted and masked for it.
    fn version_reply(&self, ctx: &RequestContext, status: StatusCode, v: &StoredVersion) -> Reply {
        let mut r = Reply::of_version(status, v, &self.base);
        if let Some(shown) = self.shown(ctx, &v.resource_type, v.body.as_deref()) {
            r.body = ReplyBody::Raw(shown);
        }
        r
    }

    /// The caller's copy of a stored body when it differs from the record: elements its
    /// inline labels hide removed, elements a masking rule names for its roles masked, the
    /// copy marked `REDACTED` / `MASKED`. `None`: the record as stored (the common case,
    /// decided by a byte scan and the rules' types without parsing).
    pub(crate) fn shown(&self, ctx: &RequestContext, resource_type: &str, body: Option<&[u8]>) -> Option<Vec<u8>> {
        let (scope, body) = (ctx.scope.as_deref()?, body?);
        let masking: Vec<&bastion_policy::redaction::MaskingRule> =
            self.masking.iter().filter(|m| m.applies(resource_type, scope.roles())).collect();
        if masking.is_empty() && !bastion_policy::redaction::may_have_inline_labels(body) {
            return None;
        }
        let mut resource: Value = serde_json::from_slice(body).ok()?;
        let redacted = bastion_policy::redaction::redact(&mut resource, scope.clearance());
        let masked = bastion_policy::redaction::mask(&mut resource, &masking);
        (redacted || masked).then(|| serde_json::to_vec(&resource).unwrap_or_default())
    }

    /// Runs a write interaction inside `tx` (not committed here).
    pub async fn write(&self, tx: &mut dyn StoreTx, ctx: &RequestContext, i: Interaction) -> Result<Reply, ApiError> {
        let ctx = &self.authorize(ctx, &i)?;
        let if_match = ctx.conditions.if_match;
        match i {
            Interaction::Create { resource_type, body } => {
                self.check_body(&body, &resource_type, None)?;
                if let Some(query) = &ctx.conditions.if_none_exist {
                    // Matched as the caller's search would (labels, Consent): what it may not
                    // see is absent here too, never returned and never an oracle.
                    let search =
                        RequestContext { access: self.access_of(ctx, &resource_type, Action::Search), ..ctx.clone() };
                    let found = self.matches(tx, &search, &resource_type, query).await?;
                    match found.as_slice() {
                        [] => {}
                        [id] => {
                            let existing = tx
                                .current(&resource_type, id)
                                .await?
                                .ok_or_else(|| ApiError::Internal("conditional create match vanished".into()))?;
                            return Ok(self.written_reply(ctx, StatusCode::OK, &existing));
                        }
                        _ => {
                            return Err(ApiError::PreconditionFailed(
                                "If-None-Exist matches more than one resource".into(),
                            ));
                        }
                    }
                }
                let mut body = body;
                self.check_write(ctx, Action::Create, &resource_type, "", Some(&mut body), None)?;
                self.check_references(tx, ctx, &body).await?;
                let v = interactions::create(tx, body, None).await?;
                Ok(self.written_reply(ctx, StatusCode::CREATED, &v))
            }
            Interaction::Update { resource_type, target, body } => {
                let id = match target {
                    Target::Id(id) => {
                        self.check_body(&body, &resource_type, Some(&id))?;
                        id
                    }
                    Target::Search(query) => {
                        let found = self.matches(tx, ctx, &resource_type, &query).await?;
                        let body_id = body.get("id").and_then(Value::as_str).map(str::to_string);
                        match (found.as_slice(), body_id) {
                            ([], None) => {
                                self.check_body(&body, &resource_type, None)?;
                                let mut body = body;
                                self.check_write(ctx, Action::Update, &resource_type, "", Some(&mut body), None)?;
                                self.check_references(tx, ctx, &body).await?;
                                let v = interactions::create(tx, body, None).await?;
                                return Ok(self.written_reply(ctx, StatusCode::CREATED, &v));
                            }
                            ([], Some(id)) => {
                                if tx.current(&resource_type, &id).await?.is_some_and(|c| !c.is_deleted()) {
                                    return Err(ApiError::Conflict(format!(
                                        "{resource_type}/{id} exists but does not match the conditional update's search"
                                    )));
                                }
                                self.check_body(&body, &resource_type, Some(&id))?;
                                id
                            }
                            ([found], body_id) => {
                                if body_id.as_deref().is_some_and(|b| b != found) {
                                    return Err(ApiError::invalid(
                                        IssueType::Invalid,
                                        "the id in the body does not match the resource the search found",
                                        Some(&format!("{resource_type}.id")),
                                    ));
                                }
                                let mut body = body;
                                body["id"] = Value::String(found.clone());
                                self.check_body(&body, &resource_type, Some(found))?;
                                return self
                                    .update_checked(tx, ctx, &resource_type, found, body, if_match, Method::Put)
                                    .await;
                            }
                            _ => {
                                return Err(ApiError::PreconditionFailed(
                                    "the conditional update's search matches more than one resource".into(),
                                ));
                            }
                        }
                    }
                };
                self.update_checked(tx, ctx, &resource_type, &id, body, if_match, Method::Put).await
            }
            Interaction::Patch { resource_type, target, patch } => {
                let id = self.single_target(tx, ctx, &resource_type, target).await?;
                let Some(current) = tx.current(&resource_type, &id).await? else {
                    return Err(ApiError::NotFound(format!("{resource_type}/{id} is not known")));
                };
                self.check_write(ctx, Action::Update, &resource_type, &id, None, Some(&current))?;
                let Some(bytes) = &current.body else {
                    return Err(ApiError::Gone { resource_type, id, version: current.version });
                };
                let mut doc: Value = serde_json::from_slice(bytes)
                    .map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))?;
                let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                    ApiError::invalid(IssueType::Structure, format!("not a valid JSON Patch document: {e}"), None)
                })?;
                json_patch::patch(&mut doc, &ops).map_err(|e| {
                    ApiError::Unprocessable(vec![Issue::error(
                        IssueType::Processing,
                        format!("the patch cannot be applied: {e}"),
                    )])
                })?;
                if doc.get("resourceType").and_then(Value::as_str) != Some(&resource_type)
                    || doc.get("id").and_then(Value::as_str) != Some(&id)
                {
                    return Err(ApiError::Unprocessable(vec![Issue::error(
                        IssueType::Invalid,
                        "a patch may not change resourceType or id",
                    )]));
                }
                self.check_body(&doc, &resource_type, Some(&id)).map_err(|e| match e {
                    ApiError::BadRequest(issues) => ApiError::Unprocessable(issues),
                    other => other,
                })?;
                // The client's If-Match if any, else the version patched: a concurrent change fails.
                self.update_checked(
                    tx,
                    ctx,
                    &resource_type,
                    &id,
                    doc,
                    if_match.or(Some(current.version)),
                    Method::Patch,
                )
                .await
            }
            Interaction::Delete { resource_type, target } => {
                let ids = match target {
                    Target::Id(id) => vec![id],
                    Target::Search(query) => {
                        let found = self.matches(tx, ctx, &resource_type, &query).await?;
                        if found.len() > 1 {
                            return Err(ApiError::PreconditionFailed(
                                "the conditional delete's search matches more than one resource".into(),
                            ));
                        }
                        found
                    }
                };
                let mut last = None;
                for id in ids {
                    let current = tx.current(&resource_type, &id).await?;
                    self.check_write(ctx, Action::Delete, &resource_type, &id, None, current.as_ref())?;
                    last = interactions::delete(tx, &resource_type, &id, if_match).await?.or(last);
                }
                let mut reply = match last {
                    Some(v) => {
                        let mut r = Reply::of_version(StatusCode::NO_CONTENT, &v, &self.base);
                        r.location = None;
                        r
                    }
                    None => Reply { status: StatusCode::NO_CONTENT, ..Reply::raw(StatusCode::NO_CONTENT, Vec::new()) },
                };
                reply.body = ReplyBody::None;
                reply.is_write_result = true;
                Ok(reply)
            }
            other => Err(ApiError::Internal(format!("not a write: {other:?}"))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn update_checked(
        &self,
        tx: &mut dyn StoreTx,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        mut body: Value,
        if_match: Option<u64>,
        method: Method,
    ) -> Result<Reply, ApiError> {
        let current = tx.current(resource_type, id).await?;
        self.check_write(ctx, Action::Update, resource_type, id, Some(&mut body), current.as_ref())?;
        self.check_references(tx, ctx, &body).await?;
        let (v, created) = interactions::update(tx, resource_type, id, body, if_match, method).await?;
        Ok(self.written_reply(ctx, if created { StatusCode::CREATED } else { StatusCode::OK }, &v))
    }

    /// The one resource a PATCH targets.
    async fn single_target(
        &self,
        tx: &mut dyn StoreTx,
        ctx: &RequestContext,
        resource_type: &str,
        target: Target,
    ) -> Result<String, ApiError> {
        match target {
            Target::Id(id) => Ok(id),
            Target::Search(query) => {
                let found = self.matches(tx, ctx, resource_type, &query).await?;
                match found.as_slice() {
                    [] => Err(ApiError::NotFound("the conditional patch's search matches nothing".into())),
                    [id] => Ok(id.clone()),
                    _ => Err(ApiError::PreconditionFailed(
                        "the conditional patch's search matches more than one resource".into(),
                    )),
                }
            }
        }
    }

    fn count_param(&self, params: &[(String, String)], default: usize) -> Result<usize, ApiError> {
        match params.iter().find(|(k, _)| k == "_count") {
            None => Ok(default.min(self.limits.max_count)),
            Some((_, v)) => match v.parse::<usize>() {
                Ok(n) => Ok(n.min(self.limits.max_count)),
                Err(_) => Err(ApiError::invalid(IssueType::Invalid, "_count must be a non-negative integer", None)),
            },
        }
    }

    fn ignored_params_outcome(ignored: &[String]) -> Option<Value> {
        (!ignored.is_empty()).then(|| {
            OperationOutcome::single(Issue::warning(
                IssueType::NotSupported,
                format!("search parameters ignored: {}", ignored.join(", ")),
            ))
            .to_json()
        })
    }

    async fn history(
        &self,
        ctx: &RequestContext,
        level: HistoryLevel,
        params: &[(String, String)],
    ) -> Result<Reply, ApiError> {
        let mut ignored = Vec::new();
        for (k, _) in params {
            if !HISTORY_PARAMS.contains(&k.as_str()) {
                if ctx.strict {
                    return Err(ApiError::invalid(
                        IssueType::NotSupported,
                        format!("history parameter '{k}' is not supported"),
                        None,
                    ));
                }
                ignored.push(k.clone());
            }
        }
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let count = self.count_param(params, 100)?;
        let since = match get("_since") {
            None => None,
            Some(s) => Some(Instant::parse_fhir(s).ok_or_else(|| {
                ApiError::invalid(IssueType::Invalid, "_since must be a FHIR instant, e.g. 2026-01-01T00:00:00Z", None)
            })?),
        };
        let cursor = |name: &str| -> Result<Option<i64>, ApiError> {
            get(name)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| ApiError::invalid(IssueType::Invalid, format!("{name} is malformed"), None))
                })
                .transpose()
        };
        let before_seq = cursor("_page_before")?;
        let max_seq = cursor("_page_max")?;
        let q = HistoryQuery { level: level.clone(), since, before_seq, max_seq, limit: count + 1 };
        let mut versions = if count == 0 { Vec::new() } else { self.store.history(&ctx.access, &q).await? };
        if let HistoryLevel::Instance { resource_type, id } = &level
            && versions.is_empty()
            && before_seq.is_none()
            && since.is_none()
        {
            return Err(ApiError::NotFound(format!("{resource_type}/{id} is not known")));
        }
        let has_next = versions.len() > count;
        versions.truncate(count);
        let path = match &level {
            HistoryLevel::Instance { resource_type, id } => format!("{resource_type}/{id}/_history"),
            HistoryLevel::Type { resource_type } => format!("{resource_type}/_history"),
            HistoryLevel::System => "_history".to_string(),
        };
        let snapshot = max_seq.or_else(|| versions.first().map(|v| v.seq));
        let mut base_query = vec![format!("_count={count}")];
        if let Some(s) = get("_since") {
            base_query.push(format!("_since={}", encode(s)));
        }
        let mut self_query = base_query.clone();
        if let Some(b) = before_seq {
            self_query.push(format!("_page_before={b}"));
        }
        if let Some(m) = max_seq {
            self_query.push(format!("_page_max={m}"));
        }
        let mut links = vec![("self", format!("{}/{path}?{}", self.base, self_query.join("&")))];
        if has_next && let (Some(last), Some(snap)) = (versions.last(), snapshot) {
            let mut next = base_query.clone();
            next.push(format!("_page_before={}", last.seq));
            next.push(format!("_page_max={snap}"));
            links.push(("next", format!("{}/{path}?{}", self.base, next.join("&"))));
        }
        let mut w =
            BundleWriter::new(&uuid::Uuid::new_v4().to_string(), &Instant::now().to_fhir(), "history", None, &links);
        if let Some(oo) = Self::ignored_params_outcome(&ignored) {
            w.entry_value(None, &oo, &json!({"search": {"mode": "outcome"}}));
        }
        for v in &versions {
            let (url, status) = match v.method {
                Method::Post => (v.resource_type.clone(), "201 Created"),
                Method::Put | Method::Patch if v.version == 1 => {
                    (format!("{}/{}", v.resource_type, v.id), "201 Created")
                }
                Method::Put | Method::Patch => (format!("{}/{}", v.resource_type, v.id), "200 OK"),
                Method::Delete => (format!("{}/{}", v.resource_type, v.id), "204 No Content"),
            };
            let rest = json!({
                "request": {"method": v.method.as_str(), "url": url},
                "response": {"status": status, "etag": format!("W/\"{}\"", v.version), "lastModified": v.last_updated.to_fhir()},
            });
            let shown = self.shown(ctx, &v.resource_type, v.body.as_deref());
            let body = shown.as_deref().or(v.body.as_deref());
            w.entry_raw(Some(&format!("{}/{}/{}", self.base, v.resource_type, v.id)), body, &rest);
            w.raise_confidentiality(self.confidentiality_of(&v.resource_type, v.body.as_deref()));
        }
        Ok(Reply::raw(StatusCode::OK, w.finish()))
    }

    async fn search(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        params: &[(String, String)],
        listing: Listing<'_>,
    ) -> Result<Reply, ApiError> {
        let patient_compartment = match listing {
            Listing::Plain => None,
            Listing::Compartment(p) | Listing::Everything(p) => Some(p),
        };
        // A system-level search parses every parameter for each type it covers, and uses
        // it only if it means something on all of them.
        let system = resource_type == crate::interaction::SYSTEM_SEARCH;
        let types: Vec<String> = if system { system_search_types(params)? } else { vec![resource_type.to_string()] };
        let mut used = Vec::new();
        let mut ignored = Vec::new();
        for (k, v) in params {
            if SEARCH_RESULT_PARAMS.contains(&k.as_str())
                || RESULT_SHAPING_PARAMS.contains(&k.as_str())
                || (system && k == "_type")
            {
                continue;
            }
            let one = [(k.clone(), v.clone())];
            let parsed: Result<Vec<_>, _> = types
                .iter()
                .map(|t| SearchQuery::parse_on_base(t, &one, self.limits.max_chain_depth, Some(&self.base)))
                .collect();
            match parsed {
                Ok(_) => used.push((k.clone(), v.clone())),
                // Unknown parameters are ignored (and reported) unless strict; an unknown
                // modifier is always an error, since ignoring it would change the meaning.
                Err(SearchError::UnknownParameter { .. } | SearchError::UnsupportedParameter { .. }) if !ctx.strict => {
                    ignored.push(k.clone())
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut query = SearchQuery::parse_on_base(&types[0], &used, self.limits.max_chain_depth, Some(&self.base))?;
        if system {
            query.types = types.clone();
        }
        self.scope_reached(ctx, &mut query)?;
        if let Some(patient) = patient_compartment {
            query.clauses.push(Clause::InPatientCompartment(patient.to_string()));
        }
        let mut shaping = Vec::new();
        let mut includes = Vec::new();
        for (k, v) in params {
            match k.as_str() {
                "_sort" => {
                    query.sort.extend(parse_sort(&types[0], v)?);
                    shaping.push((k.clone(), v.clone()));
                }
                "_include" | "_revinclude" | "_include:iterate" | "_revinclude:iterate" => {
                    includes.extend(parse_include(v, k.starts_with("_rev"), k.ends_with(":iterate"), &types)?);
                    shaping.push((k.clone(), v.clone()));
                }
                "_type" if system => shaping.push((k.clone(), v.clone())),
                _ => {}
            }
        }
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let count = self.count_param(params, 50)?;
        let with_total = match get("_total") {
            None | Some("accurate") | Some("estimate") => true,
            Some("none") => false,
            Some(other) => {
                return Err(ApiError::invalid(
                    IssueType::Invalid,
                    format!("_total must be none, estimate or accurate, not '{other}'"),
                    None,
                ));
            }
        };
        let shape = crate::shape::Shape::from_params(get("_summary"), get("_elements"))?;
        for name in ["_summary", "_elements"] {
            if let Some(v) = get(name) {
                shaping.push((name.to_string(), v.to_string()));
            }
        }
        // What the paging token is bound to: everything that selects or shapes the result.
        let mut bound: Vec<(String, String)> = used.iter().chain(shaping.iter()).cloned().collect();
        bound.push(("_count".into(), count.to_string()));
        if let Some(t) = get("_total") {
            bound.push(("_total".into(), t.to_string()));
        }
        let query_string =
            bound.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
        let mut canonical: Vec<String> = bound.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        canonical.sort();
        let canonical = format!("{}|{resource_type}?{}", patient_compartment.unwrap_or(""), canonical.join("&"));
        let offset = match get("_page") {
            None => 0,
            Some(token) => self.pages.verify(&ctx.caller, &canonical, token).ok_or_else(|| {
                ApiError::invalid(IssueType::Invalid, "the paging token is not valid for this search", Some("_page"))
            })?,
        };
        let count = if shape.count_only() { 0 } else { count };
        let page = Page { offset, limit: count, with_total };
        let result = if count == 0 && !with_total {
            bastion_store::SearchPage { items: Vec::new(), total: None }
        } else {
            self.store.search(&ctx.access, &query, page).await?
        };
        // Would breaking the glass find more? Counted with the caller's break-the-glass
        // predicate on the same query, only where the deployment tells.
        let withheld = match (self.probe_ctx(ctx), result.total, listing) {
            (Some(probe), Some(total), Listing::Plain | Listing::Compartment(_)) => {
                let interaction = Interaction::Search {
                    resource_type: resource_type.to_string(),
                    params: params.to_vec(),
                    compartment: None,
                };
                match self.authorize(&probe, &interaction) {
                    Ok(probe) => {
                        let page = Page { offset: 0, limit: 0, with_total: true };
                        let more = self.store.search(&probe.access, &query, page).await?.total.unwrap_or(0);
                        more > total
                    }
                    Err(_) => false,
                }
            }
            _ => false,
        };
        let mut included = self.includes(ctx, &includes, &result.items).await?;
        if let Listing::Everything(_) = listing {
            included.extend(self.referenced_outside_compartment(ctx, &result.items).await?);
        }
        let link = |off: usize| {
            let mut q = query_string.clone();
            if off > 0 {
                q.push_str(&format!("&_page={}", self.pages.token(&ctx.caller, &canonical, off)));
            }
            match listing {
                Listing::Everything(p) => format!("{}/Patient/{p}/$everything?{q}", self.base),
                Listing::Compartment(p) => format!("{}/Patient/{p}/{resource_type}?{q}", self.base),
                Listing::Plain if system => format!("{}?{q}", self.base),
                Listing::Plain => format!("{}/{resource_type}?{q}", self.base),
            }
        };
        let mut links = vec![("self", link(offset))];
        let more = match result.total {
            Some(t) => (offset + result.items.len()) < t as usize && count > 0,
            None => result.items.len() == count && count > 0,
        };
        if more {
            links.push(("next", link(offset + count)));
        }
        if offset > 0 {
            links.push(("previous", link(offset.saturating_sub(count.max(1)))));
        }
        let mut w = BundleWriter::new(
            &uuid::Uuid::new_v4().to_string(),
            &Instant::now().to_fhir(),
            "searchset",
            result.total,
            &links,
        );
        for (mode, list) in [("match", &result.items), ("include", &included)] {
            for v in list {
                let shown = self.shown(ctx, &v.resource_type, v.body.as_deref());
                let shaped = shape.apply(shown.as_deref().or(v.body.as_deref()))?;
                w.entry_raw(
                    Some(&format!("{}/{}/{}", self.base, v.resource_type, v.id)),
                    shaped.as_deref(),
                    &json!({"search": {"mode": mode}}),
                );
                w.raise_confidentiality(self.confidentiality_of(&v.resource_type, shaped.as_deref()));
            }
        }
        if let Some(oo) = Self::ignored_params_outcome(&ignored) {
            w.entry_value(None, &oo, &json!({"search": {"mode": "outcome"}}));
        }
        if withheld {
            let oo = OperationOutcome::single(Issue::withheld_break_the_glass()).to_json();
            w.entry_value(None, &oo, &json!({"search": {"mode": "outcome"}}));
        }
        Ok(Reply::raw(StatusCode::OK, w.finish()))
    }

    /// `Patient/[id]/$everything`: the Patient and its compartment, each type under the
    /// caller's predicate for it (see [`Engine::authorize`]), paged like a search, with the
    /// resources outside the compartment that the page refers to (Practitioner, Organization,
    /// Medication, ...) as included entries. `_type` narrows the types, `_since` the
    /// last-updated time, `_count` the page size. A patient the caller cannot read is a 404.
    async fn everything(&self, ctx: &RequestContext, id: &str, params: &[(String, String)]) -> Result<Reply, ApiError> {
        let patient_access = self.access_of(ctx, "Patient", Action::Read);
        match self.store.read(&patient_access, "Patient", id).await? {
            Some(v) if !v.is_deleted() => {}
            _ => return Err(ApiError::NotFound(format!("Patient/{id} is not known"))),
        }
        let mut search = vec![("_type".to_string(), everything_types(params)?.join(","))];
        for (k, v) in params {
            match k.as_str() {
                "_type" => {}
                "_count" | "_page" | "_total" | "_format" | "_pretty" => search.push((k.clone(), v.clone())),
                "_since" => search.push(("_lastUpdated".into(), format!("ge{v}"))),
                other if ctx.strict => {
                    return Err(ApiError::invalid(
                        IssueType::NotSupported,
                        format!("$everything does not take the parameter '{other}'"),
                        None,
                    ));
                }
                _ => {}
            }
        }
        self.search(ctx, crate::interaction::SYSTEM_SEARCH, &search, Listing::Everything(id)).await
    }

    /// What `items` refer to outside the Patient compartment, each type under the caller's
    /// read predicate (for a `patient/` caller: what the patient's record refers to).
    async fn referenced_outside_compartment(
        &self,
        ctx: &RequestContext,
        items: &[StoredVersion],
    ) -> Result<Vec<StoredVersion>, ApiError> {
        let mut targets: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for v in items {
            let Some(body) = v.body.as_deref().and_then(|b| serde_json::from_slice::<Value>(b).ok()) else { continue };
            collect_references(&body, &mut |t, id| {
                if bastion_fhir::definitions::patient_compartment_params(t).is_empty()
                    && bastion_fhir::definitions::is_resource_type(t)
                {
                    targets.entry(t.to_string()).or_default().insert(id.to_string());
                }
            });
        }
        let mut out = Vec::new();
        for (t, ids) in targets {
            let access = self.access_of(ctx, &t, Action::Read);
            if access == AccessPredicate::DenyAll {
                continue;
            }
            let q = SearchQuery {
                resource_type: t.clone(),
                clauses: vec![Clause::Id(ids.into_iter().collect())],
                ..SearchQuery::default()
            };
            let page = Page { offset: 0, limit: self.limits.max_count, with_total: false };
            out.extend(self.store.search(&access, &q, page).await?.items);
        }
        Ok(out)
    }

    /// `_include` and `_revinclude` (with `:iterate`, up to [`MAX_INCLUDE_ROUNDS`]): each is
    /// a search of its own, so the caller's access predicate applies inside its SQL exactly
    /// as it does to the primary search.
    async fn includes(
        &self,
        ctx: &RequestContext,
        includes: &[Include],
        matches: &[StoredVersion],
    ) -> Result<Vec<StoredVersion>, ApiError> {
        let mut seen: std::collections::HashSet<(String, String)> =
            matches.iter().map(|v| (v.resource_type.clone(), v.id.clone())).collect();
        let mut out: Vec<StoredVersion> = Vec::new();
        let mut frontier: Vec<StoredVersion> = matches.to_vec();
        for round in 0..MAX_INCLUDE_ROUNDS {
            let mut found = Vec::new();
            for inc in includes.iter().filter(|i| round == 0 || i.iterate) {
                let page = Page { offset: 0, limit: self.limits.max_count, with_total: false };
                if inc.reverse {
                    // Resources of source_type whose param points at a result.
                    let mut by_type: std::collections::BTreeMap<&str, Vec<ReferenceValue>> = Default::default();
                    for v in &frontier {
                        by_type
                            .entry(&v.resource_type)
                            .or_default()
                            .push(ReferenceValue::Typed { resource_type: v.resource_type.clone(), id: v.id.clone() });
                    }
                    if by_type.is_empty() {
                        continue;
                    }
                    let values = by_type.into_values().flatten().collect();
                    let q = SearchQuery {
                        resource_type: inc.source_type.clone(),
                        clauses: vec![Clause::Reference { param: inc.param.clone(), values }],
                        ..SearchQuery::default()
                    };
                    let access = self.access_of(ctx, &inc.source_type, Action::Read);
                    found.extend(self.store.search(&access, &q, page).await?.items);
                } else {
                    let source_ids: Vec<String> =
                        frontier.iter().filter(|v| v.resource_type == inc.source_type).map(|v| v.id.clone()).collect();
                    if source_ids.is_empty() {
                        continue;
                    }
                    for target in &inc.target_types {
                        let q = SearchQuery {
                            resource_type: target.clone(),
                            clauses: vec![Clause::ReferencedBy {
                                source_type: inc.source_type.clone(),
                                param: inc.param.clone(),
                                source_ids: source_ids.clone(),
                            }],
                            ..SearchQuery::default()
                        };
                        let access = self.access_of(ctx, target, Action::Read);
                        found.extend(self.store.search(&access, &q, page).await?.items);
                    }
                }
            }
            found.retain(|v| seen.insert((v.resource_type.clone(), v.id.clone())));
            if found.is_empty() {
                break;
            }
            out.extend(found.iter().cloned());
            frontier = found;
        }
        Ok(out)
    }
}

/// The types a system-level search covers: those `_type` lists (comma-separated, or
/// repeated), or every resource type.
fn system_search_types(params: &[(String, String)]) -> Result<Vec<String>, ApiError> {
    let mut types: Vec<String> = Vec::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "_type") {
        for t in v.split(',') {
            if !bastion_fhir::definitions::is_resource_type(t) {
                return Err(ApiError::invalid(
                    IssueType::Invalid,
                    "_type lists a name that is not an R4 resource type",
                    Some("_type"),
                ));
            }
            if !types.iter().any(|x| x == t) {
                types.push(t.to_string());
            }
        }
    }
    if types.is_empty() {
        types = bastion_fhir::definitions::resource_types().iter().map(|t| t.to_string()).collect();
    }
    Ok(types)
}

/// What a search lists: a type (or every type), a patient's compartment of one type, or a
/// patient's whole record (`$everything`).
#[derive(Debug, Clone, Copy)]
enum Listing<'a> {
    Plain,
    Compartment(&'a str),
    Everything(&'a str),
}

/// The types `$everything` lists: Patient and every type of the Patient compartment, or
/// those of them `_type` names.
fn everything_types(params: &[(String, String)]) -> Result<Vec<String>, ApiError> {
    static RECORD: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let record = RECORD.get_or_init(|| {
        bastion_fhir::definitions::resource_types()
            .iter()
            .filter(|t| !bastion_fhir::definitions::patient_compartment_params(t).is_empty())
            .cloned()
            .collect()
    });
    if !params.iter().any(|(k, _)| k == "_type") {
        return Ok(record.clone());
    }
    let asked = system_search_types(params)?;
    if let Some(t) = asked.iter().find(|t| !record.contains(t)) {
        return Err(ApiError::invalid(
            IssueType::Invalid,
            format!("_type names {t}, which is not a type of the Patient compartment"),
            Some("_type"),
        ));
    }
    Ok(asked)
}

/// Calls `f(type, id)` for every relative reference (`Type/id`) in a resource.
fn collect_references(v: &Value, f: &mut impl FnMut(&str, &str)) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("reference") {
                // `Type/id` or `Type/id/_history/v`; absolute URLs, `#contained` and
                // `urn:` references are not local resources.
                let parts: Vec<&str> = r.split('/').collect();
                if let [t, id] | [t, id, "_history", _] = parts.as_slice()
                    && bastion_fhir::primitives::is_valid_id(id)
                    && t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                {
                    f(t, id);
                }
            }
            o.values().for_each(|x| collect_references(x, f));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_references(x, f)),
        _ => {}
    }
}

/// How many rounds `:iterate` follows references.
const MAX_INCLUDE_ROUNDS: usize = 3;
/// Parameters that shape a search result rather than filter it.
const RESULT_SHAPING_PARAMS: &[&str] = &["_sort", "_include", "_revinclude", "_include:iterate", "_revinclude:iterate"];

/// Percent-encodes a query component.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
