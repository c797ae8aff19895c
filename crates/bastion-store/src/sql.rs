//! SQL shared by both backends: one text, written with `?` placeholders and rewritten to
//! `$n` for PostgreSQL, so that a query, an access predicate or a search compiles the same
//! way everywhere. Every value is bound, never spliced: the only text that enters SQL here
//! is written in this file.

use bastion_fhir::definitions::SearchParamType;
use bastion_search::access::ContentNeed;
use bastion_search::query::{DatePrefix, DateValue, NumberValue, ReferenceValue, StringMode, SystemMatch, UriMode};
use bastion_search::{AccessPredicate, AccessRow, Clause, SearchQuery, SortBy, TokenValue};

use crate::types::{HistoryLevel, HistoryQuery, Page};

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Int(i64),
    Float(f64),
    Text(String),
    OptText(Option<String>),
    OptBlob(Option<Vec<u8>>),
}

/// SQL text with its parameters, in order.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<SqlValue>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql { text: text.to_string(), params: Vec::new() }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind(&mut self, v: SqlValue) -> &mut Self {
        self.text.push('?');
        self.params.push(v);
        self
    }

    pub fn bind_text(&mut self, s: &str) -> &mut Self {
        self.bind(SqlValue::Text(s.to_string()))
    }

    /// `column IN (...)` that a row tests rather than one an index is searched with: up to
    /// [`MAX_EQUALITY_CHAIN`] items as a chain of equalities, compared in place, since an
    /// `IN` list costs SQLite a temporary table per statement run (a label predicate and a
    /// Consent's patients would build several for every search).
    fn push_member_of(&mut self, column: &str, items: &[String]) -> &mut Self {
        if items.is_empty() || items.len() > MAX_EQUALITY_CHAIN {
            return self.push(column).push(" IN ").bind_list(items);
        }
        self.push("(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            self.push(column).push(" = ").bind_text(item);
        }
        self.push(")")
    }

    fn bind_list(&mut self, items: &[String]) -> &mut Self {
        self.push("(");
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind_text(s);
        }
        self.push(")")
    }
}

/// `?` -> `$1, $2, ...` (no statement here has a `?` inside a literal).
pub fn to_postgres_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut n = 0;
    for c in text.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest list [`Sql::push_member_of`] writes as a chain of equalities (the label
/// vocabulary's longest system has fewer codes).
const MAX_EQUALITY_CHAIN: usize = 128;

/// The columns of a version row, in the order `decode` functions read them.
pub const VERSION_COLUMNS: &str =
    "v.res_type, v.res_id, v.version_id, v.last_updated, v.method, v.body, v.compartments, v.seq";

/// Appends the access predicate over the version row aliased `v`.
pub fn push_access(sql: &mut Sql, access: &AccessPredicate) {
    push_access_as(sql, access, "v")
}

/// [`push_access`] where `v` is the current version of the row `r` of `resources` (read,
/// search): what the predicate asks of the current row is read from `r` itself.
fn push_access_current(sql: &mut Sql, access: &AccessPredicate) {
    push_access_in(sql, access, "v", false, Some("r"))
}

/// The access predicate over the version row aliased `v` (a chain's target has its own).
fn push_access_as(sql: &mut Sql, access: &AccessPredicate, v: &str) {
    push_access_in(sql, access, v, false, None)
}

/// `negated`: the part lies under a `Not`, so it can only test rows, never find them. A
/// compartment list there is tested on each row's own compartment rows (one seek, the list
/// probed in memory: `|| ''` keeps the planner from seeking once per listed patient, which a
/// Consent's list of patients would make hundreds of seeks per row).
/// `current`: the alias of the `resources` row whose current version `v` is, when there is one.
fn push_access_in(sql: &mut Sql, access: &AccessPredicate, v: &str, negated: bool, current: Option<&str>) {
    let a = Alias { r: String::new(), v: v.to_string(), types: Vec::new(), correlated: false };
    match access {
        AccessPredicate::AllowAll => {
            sql.push("1 = 1");
        }
        AccessPredicate::DenyAll => {
            sql.push("1 = 0");
        }
        AccessPredicate::PatientCompartment(patients) if patients.is_empty() => {
            sql.push("1 = 0");
        }
        AccessPredicate::PatientCompartment(patients) if negated => {
            sql.pusha("(({v}.res_type = 'Patient' AND ", &a).push_member_of(&format!("{v}.res_id"), patients);
            sql.pusha(
                ") OR EXISTS (SELECT 1 FROM compartments c WHERE c.res_pk = {v}.res_pk AND c.version_id = {v}.version_id AND ",
                &a,
            );
            // `|| ''`: above the chain's length, an IN list still must not be seeked per patient.
            sql.push_member_of("(c.patient_id || '')", patients).push("))");
        }
        AccessPredicate::PatientCompartment(patients) => {
            sql.pusha("(({v}.res_type = 'Patient' AND {v}.res_id IN ", &a);
            sql.bind_list(patients);
            sql.pusha(
                ") OR EXISTS (SELECT 1 FROM compartments c WHERE c.res_pk = {v}.res_pk AND c.version_id = {v}.version_id AND c.patient_id IN ",
                &a,
            );
            sql.bind_list(patients);
            sql.push("))");
        }
        AccessPredicate::ReferencedFromCompartment(patients) if patients.is_empty() => {
            sql.push("1 = 0");
        }
        AccessPredicate::ReferencedFromCompartment(patients) => {
            sql.pusha(
                "EXISTS (SELECT 1 FROM idx_reference rf JOIN resources rr ON rr.pk = rf.res_pk \
                 JOIN compartments rc ON rc.res_pk = rr.pk AND rc.version_id = rr.version_id \
                 WHERE rf.target_id = {v}.res_id AND rf.target_type = {v}.res_type AND rc.patient_id IN ",
                &a,
            );
            sql.bind_list(patients);
            sql.push(")");
        }
        AccessPredicate::ResourceType(types) if types.is_empty() => {
            sql.push("1 = 0");
        }
        AccessPredicate::ResourceType(types) => {
            sql.pusha("{v}.res_type IN ", &a).bind_list(types);
        }
        AccessPredicate::Instances(list) if list.is_empty() => {
            sql.push("1 = 0");
        }
        AccessPredicate::Instances(list) => {
            sql.push("(");
            for (i, (t, id)) in list.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                sql.pusha("({v}.res_type = ", &a).bind_text(t).pusha(" AND {v}.res_id = ", &a).bind_text(id).push(")");
            }
            sql.push(")");
        }
        AccessPredicate::OutsideCompartments(patients) if patients.is_empty() => {
            sql.pusha("({v}.res_type = 'Patient' OR EXISTS (SELECT 1 FROM compartments c WHERE c.res_pk = {v}.res_pk AND c.version_id = {v}.version_id))", &a);
        }
        AccessPredicate::OutsideCompartments(patients) => {
            sql.pusha("(({v}.res_type = 'Patient' AND NOT ", &a).push_member_of(&format!("{v}.res_id"), patients);
            sql.pusha(
                ") OR EXISTS (SELECT 1 FROM compartments c WHERE c.res_pk = {v}.res_pk AND c.version_id = {v}.version_id AND NOT ",
                &a,
            );
            sql.push_member_of("(c.patient_id || '')", patients).push("))");
        }
        AccessPredicate::Token { values, .. } if values.is_empty() => {
            sql.push("1 = 0");
        }
        // The token index holds the current version's values only: on an older version
        // (vread, history) this tests what the resource holds now, and the in-memory
        // evaluator then checks the version itself (see `recheck`).
        AccessPredicate::Token { param, values } => {
            push_token_exists(sql, param, &a, current, |sql| {
                push_token_values(sql, values);
            });
        }
        // The date index, like the token index, holds the current version's values.
        AccessPredicate::DateOverlaps { param, low, high } => {
            sql.pusha("EXISTS (SELECT 1 FROM idx_date d WHERE d.res_pk = {v}.res_pk AND d.param = ", &a);
            sql.bind_text(param);
            if let Some(l) = low {
                sql.push(" AND d.high >= ").bind(SqlValue::Int(*l));
            }
            if let Some(h) = high {
                sql.push(" AND d.low <= ").bind(SqlValue::Int(*h));
            }
            sql.push(")");
        }
        // Same caveat as `Token`. A system that is NULL makes `t.system = ?` NULL, not
        // false; COALESCE keeps a label without a system from passing as an allowed one.
        AccessPredicate::TokenOtherThan { param, values } => {
            push_token_exists(sql, param, &a, current, |sql| {
                sql.push("NOT COALESCE(");
                push_token_values(sql, values);
                sql.push(", 1 = 0)");
            });
        }
        AccessPredicate::All(ps) | AccessPredicate::Any(ps) if ps.is_empty() => {
            sql.push(if matches!(access, AccessPredicate::All(_)) { "1 = 1" } else { "1 = 0" });
        }
        AccessPredicate::All(ps) | AccessPredicate::Any(ps) => {
            let join = if matches!(access, AccessPredicate::All(_)) { " AND " } else { " OR " };
            sql.push("(");
            for (i, p) in ps.iter().enumerate() {
                if i > 0 {
                    sql.push(join);
                }
                push_access_in(sql, p, v, negated, current);
            }
            sql.push(")");
        }
        AccessPredicate::Not(p) => {
            sql.push("NOT (");
            push_access_in(sql, p, v, !negated, current);
            sql.push(")");
        }
    }
}

/// `(guard EXISTS (a token row of the row's `param` for which `test` holds))`, `t` the token row.
fn push_token_exists(sql: &mut Sql, param: &str, a: &Alias, current: Option<&str>, test: impl FnOnce(&mut Sql)) {
    sql.push("(");
    push_labelled_guard(sql, param, a, current);
    sql.pusha("EXISTS (SELECT 1 FROM idx_token t WHERE t.res_pk = {v}.res_pk AND t.param = ", a);
    sql.bind_text(param).push(" AND ");
    test(sql);
    sql.push("))");
}

/// `labelled AND ` in front of a test of `_security` tokens: labels are looked at only on
/// resources that have some (`resources.labelled`, the current version's, like the token
/// index), so the common unlabelled row costs one lookup and the long lists of a label
/// predicate are never built for it.
fn push_labelled_guard(sql: &mut Sql, param: &str, a: &Alias, current: Option<&str>) {
    if param != "_security" && param != bastion_fhir::labels::LABEL_CLASS_PARAM {
        return;
    }
    match current {
        Some(r) => {
            sql.push(r).push(".labelled = 1 AND ");
        }
        None => {
            sql.pusha("EXISTS (SELECT 1 FROM resources rl WHERE rl.pk = {v}.res_pk AND rl.labelled = 1) AND ", a);
        }
    }
}

/// `(v1 OR v2 ...)` over the token row `t`; values of one system with a code are grouped
/// into one `IN` list, so a label policy's long list of allowed codes stays a few tests.
fn push_token_values(sql: &mut Sql, values: &[TokenValue]) {
    let mut by_system: Vec<(&str, Vec<String>)> = Vec::new();
    let mut others: Vec<&TokenValue> = Vec::new();
    for v in values {
        match (&v.system, &v.code) {
            (SystemMatch::Is(system), Some(code)) => match by_system.iter_mut().find(|(s, _)| s == system) {
                Some((_, codes)) => codes.push(code.clone()),
                None => by_system.push((system, vec![code.clone()])),
            },
            _ => others.push(v),
        }
    }
    sql.push("(");
    let mut first = true;
    for (system, codes) in &by_system {
        if !std::mem::take(&mut first) {
            sql.push(" OR ");
        }
        sql.push("(t.system = ").bind_text(system).push(" AND ").push_member_of("t.code", codes).push(")");
    }
    for v in others {
        if !std::mem::take(&mut first) {
            sql.push(" OR ");
        }
        push_token_value(sql, v);
    }
    if first {
        sql.push("1 = 0");
    }
    sql.push(")");
}

fn push_token_value(sql: &mut Sql, t: &TokenValue) {
    match (&t.system, &t.code) {
        (SystemMatch::Any, Some(code)) => {
            sql.push("t.code = ").bind_text(code);
        }
        (SystemMatch::NoSystem, Some(code)) => {
            sql.push("(t.code = ").bind_text(code).push(" AND t.system IS NULL)");
        }
        (SystemMatch::Is(system), Some(code)) => {
            sql.push("(t.code = ").bind_text(code).push(" AND t.system = ").bind_text(system).push(")");
        }
        (SystemMatch::Is(system), None) => {
            sql.push("t.system = ").bind_text(system);
        }
        // The parser never yields these; match nothing rather than everything.
        (SystemMatch::Any | SystemMatch::NoSystem, None) => {
            sql.push("1 = 0");
        }
    }
}

/// Table aliases of the current row (`r`) and its version row (`v`) that a clause tests.
pub struct Alias {
    r: String,
    v: String,
    /// The resource types the aliased row can be (bound into index lookups).
    types: Vec<String>,
    /// Test the row (`EXISTS` on its own index rows) rather than select the set of rows
    /// (`pk IN (...)`): see [`push_clauses`].
    correlated: bool,
}

impl Alias {
    fn correlated(&self) -> Alias {
        Alias { r: self.r.clone(), v: self.v.clone(), types: self.types.clone(), correlated: true }
    }
}

/// How well a clause narrows a search, lower first: the clause a query is driven by.
/// A guess from the parameter's kind, not from statistics, so that the plan does not depend
/// on whether the database has been analysed: a reference to one resource or an id selects
/// a handful of rows, a token or string some, a date range many.
fn selectivity(clause: &Clause) -> Option<u8> {
    Some(match clause {
        Clause::Id(_) => 0,
        Clause::Reference { values, .. } if values.iter().all(|v| !matches!(v, ReferenceValue::Url(_))) => 1,
        Clause::InPatientCompartment(_) | Clause::ReferencedBy { .. } => 1,
        Clause::Reference { .. } | Clause::Uri { .. } => 2,
        Clause::Token { .. } | Clause::String { .. } => 3,
        Clause::Date { .. } | Clause::Number { .. } | Clause::Quantity { .. } => 4,
        Clause::Chain { .. } | Clause::Has { .. } => 5,
        Clause::All(_) | Clause::Any(_) => 6,
        // These only ever filter.
        Clause::LastUpdated(_) | Clause::Missing { .. } | Clause::Not(_) => return None,
    })
}

impl Sql {
    /// Pushes SQL text written with `{r}` / `{v}` for the aliases in scope.
    fn pusha(&mut self, template: &str, a: &Alias) -> &mut Self {
        let text = template.replace("{r}", &a.r).replace("{v}", &a.v);
        self.push(&text)
    }
}

/// The predicates one search applies: its own, and, for the rows of other types that chains
/// and `_has` reach, each of those types' own.
#[derive(Clone, Copy)]
struct Reach<'a> {
    main: &'a AccessPredicate,
    /// `None`: the search's own predicate everywhere (only right when it is the same for
    /// every type, as for the server's own work).
    reached: Option<&'a [(String, AccessPredicate)]>,
}

impl Reach<'_> {
    /// The predicate for rows that may be of any of `types`; a type the authorization did not
    /// decide reaches nothing.
    fn of(&self, types: &[String]) -> AccessPredicate {
        let Some(reached) = self.reached else { return self.main.clone() };
        let one =
            |t: &str| reached.iter().find(|(x, _)| x == t).map(|(_, p)| p.clone()).unwrap_or(AccessPredicate::DenyAll);
        match types {
            [t] => one(t),
            _ => AccessPredicate::Any(
                types
                    .iter()
                    .map(|t| AccessPredicate::All(vec![AccessPredicate::ResourceType(vec![t.clone()]), one(t)]))
                    .collect(),
            )
            .simplified(),
        }
    }
}

/// Appends the search clauses over the current-resource row aliased `r`.
///
/// The most selective clause (see [`selectivity`]) selects the candidate rows
/// (`r.pk IN (SELECT res_pk FROM idx_... WHERE ...)`); every other clause tests each
/// candidate through its own index rows (`EXISTS (... WHERE res_pk = r.pk ...)`). Left to
/// itself, a planner without statistics may instead materialise the broadest clause
/// (`category=laboratory`: half the table) and probe it; with this shape both backends
/// start from the narrow set.
fn push_clauses(sql: &mut Sql, query: &SearchQuery, access: &AccessPredicate, driver: Option<usize>) {
    let access = &Reach { main: access, reached: query.reached_access.as_deref() };
    let top = Alias { r: "r".into(), v: "v".into(), types: query.scope_types(), correlated: false };
    for (i, clause) in query.clauses.iter().enumerate() {
        sql.push(" AND ");
        let a = if Some(i) == driver { &top } else { &top.correlated() };
        push_clause(sql, clause, query.scope_type(), access, a, 0);
    }
}

/// The resource-type test of rows that `driver` selects. With a driving clause other than
/// `_id`, the test must not be usable as an index: a planner without statistics would
/// otherwise walk every resource of the type and probe the driver for each (`|| ''` is the
/// portable way to say so; the driver's own subquery is bound to the type already).
fn type_column(column: &str, driver: Option<&Clause>) -> String {
    match driver {
        Some(c) if !matches!(c, Clause::Id(_)) && selectivity(c).is_some() => format!("({column} || '')"),
        _ => column.to_string(),
    }
}

/// The clause that selects the candidates: the most selective one, if any clause can.
fn driver(query: &SearchQuery) -> Option<usize> {
    query.clauses.iter().enumerate().filter_map(|(i, c)| selectivity(c).map(|s| (s, i))).min().map(|(_, i)| i)
}

/// One clause over the rows aliased in `a`. Chains and `_has` open a subquery on other rows,
/// aliased by depth, and apply the caller's access predicate to those rows too: a chain never
/// matches through a resource the caller may not see.
fn push_clause(sql: &mut Sql, clause: &Clause, resource_type: &str, access: &Reach<'_>, a: &Alias, depth: usize) {
    match clause {
        Clause::Id(ids) => {
            sql.pusha("{r}.res_id IN ", a).bind_list(ids);
        }
        Clause::Token { param, values } => {
            push_index_match(sql, a, "idx_token", "t", param, values, |sql, v| {
                push_token_value(sql, v);
            });
        }
        Clause::String { param, mode, values } => {
            push_index_match(sql, a, "idx_string", "s", param, values, |sql, v| {
                match mode {
                    StringMode::Exact => sql.push("s.exact = ").bind_text(v),
                    // The range lets the index drive (both backends compare this column
                    // byte-wise); LIKE keeps the match exact.
                    StringMode::StartsWith => sql
                        .push("(s.normalized >= ")
                        .bind_text(v)
                        .push(" AND s.normalized < ")
                        .bind_text(&format!("{v}\u{10FFFF}"))
                        .push(" AND s.normalized LIKE ")
                        .bind_text(&format!("{}%", like_escape(v)))
                        .push(" ESCAPE '\\')"),
                    StringMode::Contains => {
                        sql.push("s.normalized LIKE ").bind_text(&format!("%{}%", like_escape(v))).push(" ESCAPE '\\'")
                    }
                };
            });
        }
        Clause::Date { param, values } => {
            push_index_match(sql, a, "idx_date", "d", param, values, |sql, v| {
                push_date(sql, v, "d.low", "d.high");
            });
        }
        Clause::LastUpdated(values) => {
            sql.push("(");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                push_date(sql, v, &format!("{}.last_updated", a.v), &format!("{}.last_updated", a.v));
            }
            sql.push(")");
        }
        Clause::Reference { param, values } => {
            let one = |sql: &mut Sql, v: &ReferenceValue| {
                match v {
                    ReferenceValue::Typed { resource_type, id } => sql
                        .push("(x.target_type = ")
                        .bind_text(resource_type)
                        .push(" AND x.target_id = ")
                        .bind_text(id)
                        .push(")"),
                    ReferenceValue::Id(id) => sql.push("x.target_id = ").bind_text(id),
                    ReferenceValue::Url(url) => sql.push("x.url = ").bind_text(url),
                };
            };
            let ids: Option<Vec<String>> = values
                .iter()
                .map(|v| match v {
                    ReferenceValue::Typed { id, .. } | ReferenceValue::Id(id) => Some(id.clone()),
                    ReferenceValue::Url(_) => None,
                })
                .collect();
            match ids {
                // Several ids (a `_revinclude` over a page of results): the ids as an IN list
                // that the index can seek, the exact (type, id) pairs as the filter. An OR of
                // pairs alone makes a planner scan the whole parameter.
                Some(ids) if values.len() > 1 => {
                    push_index_match(sql, a, "idx_reference", "x", param, &[()], |sql, _| {
                        sql.push("x.target_id IN ").bind_list(&ids).push(" AND (");
                        for (i, v) in values.iter().enumerate() {
                            if i > 0 {
                                sql.push(" OR ");
                            }
                            one(sql, v);
                        }
                        sql.push(")");
                    });
                }
                _ => push_index_match(sql, a, "idx_reference", "x", param, values, one),
            }
        }
        Clause::Number { param, values } => {
            push_index_match(sql, a, "idx_number", "n", param, values, |sql, v| {
                push_number(sql, v, "n.value");
            });
        }
        Clause::Quantity { param, values } => {
            push_index_match(sql, a, "idx_quantity", "q", param, values, |sql, v| {
                sql.push("(");
                push_number(sql, &v.number, "q.value");
                match (&v.system, &v.code) {
                    (Some(system), Some(code)) => {
                        sql.push(" AND q.system = ").bind_text(system).push(" AND q.code = ").bind_text(code);
                    }
                    (None, Some(code)) => {
                        sql.push(" AND (q.code = ").bind_text(code).push(" OR q.unit = ").bind_text(code).push(")");
                    }
                    (Some(system), None) => {
                        sql.push(" AND q.system = ").bind_text(system);
                    }
                    (None, None) => {}
                }
                sql.push(")");
            });
        }
        Clause::Uri { param, mode, values } => {
            push_index_match(sql, a, "idx_uri", "u", param, values, |sql, v| {
                match mode {
                    UriMode::Exact => sql.push("u.value = ").bind_text(v),
                    UriMode::Below => {
                        sql.push("u.value LIKE ").bind_text(&format!("{}%", like_escape(v))).push(" ESCAPE '\\'")
                    }
                    UriMode::Above => sql.push("substr(").bind_text(v).push(", 1, length(u.value)) = u.value"),
                };
            });
        }
        Clause::InPatientCompartment(patient) if a.correlated => {
            sql.pusha("(EXISTS (SELECT 1 FROM compartments c2 WHERE c2.res_pk = {r}.pk AND c2.version_id = {r}.version_id AND c2.patient_id = ", a)
                .bind_text(patient)
                .push(")");
            if resource_type == "Patient" {
                sql.pusha(" OR {r}.res_id = ", a).bind_text(patient);
            }
            sql.push(")");
        }
        Clause::InPatientCompartment(patient) => {
            sql.pusha("({r}.pk IN (SELECT c2.res_pk FROM compartments c2 JOIN resources cr ON cr.pk = c2.res_pk AND cr.version_id = c2.version_id WHERE c2.patient_id = ", a)
                    .bind_text(patient)
                    .push(")");
            if resource_type == "Patient" {
                sql.pusha(" OR {r}.res_id = ", a).bind_text(patient);
            }
            sql.push(")");
        }
        Clause::ReferencedBy { source_type, param, source_ids } => {
            // Driven by the source ids (src by its unique key, then its own reference rows);
            // the reference rows' type is implied by src and deliberately not tested, since an
            // index on it would invite a scan of every reference of the parameter.
            sql.pusha("{r}.pk IN (SELECT tgt.pk FROM resources src JOIN idx_reference x ON x.res_pk = src.pk", a)
                .push(" JOIN resources tgt ON tgt.res_type = x.target_type AND tgt.res_id = x.target_id WHERE src.res_type = ")
                .bind_text(source_type)
                .push(" AND src.res_id IN ")
                .bind_list(source_ids)
                .push(" AND x.param = ")
                .bind_text(param)
                .push(")");
        }
        Clause::Missing { param, kind, missing } => {
            let table = match kind {
                SearchParamType::Token => "idx_token",
                SearchParamType::String => "idx_string",
                SearchParamType::Date => "idx_date",
                SearchParamType::Number => "idx_number",
                SearchParamType::Quantity => "idx_quantity",
                SearchParamType::Uri => "idx_uri",
                _ => "idx_reference",
            };
            sql.push(if *missing { "NOT EXISTS (SELECT 1 FROM " } else { "EXISTS (SELECT 1 FROM " });
            sql.push(table).pusha(" m WHERE m.res_pk = {r}.pk AND m.param = ", a).bind_text(param).push(")");
        }
        Clause::Any(clauses) | Clause::All(clauses) => {
            let join = if matches!(clause, Clause::Any(_)) { " OR " } else { " AND " };
            sql.push("(");
            for (i, c) in clauses.iter().enumerate() {
                if i > 0 {
                    sql.push(join);
                }
                push_clause(sql, c, resource_type, access, a, depth);
            }
            if clauses.is_empty() {
                sql.push(if matches!(clause, Clause::Any(_)) { "1 = 0" } else { "1 = 1" });
            }
            sql.push(")");
        }
        Clause::Not(inner) => {
            sql.push("NOT (");
            push_clause(sql, inner, resource_type, access, &a.correlated(), depth);
            sql.push(")");
        }
        Clause::Chain { param, target_types, inner } if a.correlated => {
            // This row's `param` points at a visible target matching `inner`.
            let n = depth + 1;
            let t = &Alias { r: format!("r{n}"), v: format!("v{n}"), types: target_types.clone(), correlated: false };
            let x = format!("x{n}");
            sql.push("EXISTS (SELECT 1 FROM idx_reference ").push(&x);
            sql.pusha(" JOIN resources {r} ON {r}.res_type = ", t)
                .push(&x)
                .pusha(".target_type AND {r}.res_id = ", t)
                .push(&x)
                .push(".target_id");
            sql.pusha(" JOIN resource_versions {v} ON {v}.res_type = {r}.res_type AND {v}.res_id = {r}.res_id AND {v}.version_id = {r}.version_id", t);
            sql.push(" WHERE ").push(&x).pusha(".res_pk = {r}.pk", a);
            sql.push(" AND ").push(&x).push(".param = ").bind_text(param);
            sql.pusha(" AND {r}.deleted = 0 AND {r}.res_type IN ", t).bind_list(target_types);
            sql.push(" AND ");
            push_clause(sql, inner, &target_types[0], access, t, n);
            sql.push(" AND ");
            push_access_as(sql, &access.of(target_types), &t.v);
            sql.push(")");
        }
        Clause::Chain { param, target_types, inner } => {
            // The rows whose `param` points at one of the visible targets matching `inner`:
            // the targets first (driven by `inner`), then the references to them by index.
            let n = depth + 1;
            let t = &Alias { r: format!("r{n}"), v: format!("v{n}"), types: target_types.clone(), correlated: false };
            let x = format!("x{n}");
            sql.pusha("{r}.pk IN (SELECT ", a).push(&x).push(".res_pk FROM idx_reference ").push(&x);
            sql.push(" WHERE ").push(&x).push(".res_type IN ").bind_list(&a.types);
            sql.push(" AND ").push(&x).push(".param = ").bind_text(param);
            sql.push(" AND (").push(&x).push(".target_type, ").push(&x).push(".target_id) IN (");
            sql.pusha("SELECT {r}.res_type, {r}.res_id FROM resources {r}", t);
            sql.pusha(" JOIN resource_versions {v} ON {v}.res_type = {r}.res_type AND {v}.res_id = {r}.res_id AND {v}.version_id = {r}.version_id", t);
            sql.pusha(" WHERE {r}.deleted = 0 AND ", t).push(&type_column(&format!("{}.res_type", t.r), Some(inner)));
            sql.push(" IN ").bind_list(target_types);
            sql.push(" AND ");
            push_clause(sql, inner, &target_types[0], access, t, n);
            sql.push(" AND ");
            push_access_as(sql, &access.of(target_types), &t.v);
            sql.push("))");
        }
        Clause::Has { source_type, param, inner } => {
            // The rows that a visible `source_type` resource matching `inner` points at.
            let n = depth + 1;
            let t =
                &Alias { r: format!("r{n}"), v: format!("v{n}"), types: vec![source_type.clone()], correlated: false };
            let x = format!("x{n}");
            let target = format!("tr{n}");
            if a.correlated {
                // The same, tested for this row: a source row pointing at it.
                sql.push("EXISTS (SELECT 1 FROM resources ").pusha("{r}", t);
                sql.pusha(" JOIN resource_versions {v} ON {v}.res_type = {r}.res_type AND {v}.res_id = {r}.res_id AND {v}.version_id = {r}.version_id", t);
                sql.push(" JOIN idx_reference ").push(&x).push(" ON ").push(&x).pusha(".res_pk = {r}.pk", t);
                sql.pusha(" WHERE {r}.res_type = ", t).bind_text(source_type).pusha(" AND {r}.deleted = 0", t);
                sql.push(" AND ").push(&x).push(".param = ").bind_text(param);
                sql.push(" AND ")
                    .push(&x)
                    .pusha(".target_type = {r}.res_type AND ", a)
                    .push(&x)
                    .pusha(".target_id = {r}.res_id", a);
                sql.push(" AND ");
                push_clause(sql, inner, source_type, access, t, n);
                sql.push(" AND ");
                push_access_as(sql, &access.of(std::slice::from_ref(source_type)), &t.v);
                sql.push(")");
                return;
            }
            sql.pusha("{r}.pk IN (SELECT ", a).push(&target).push(".pk FROM resources ").pusha("{r}", t);
            sql.pusha(" JOIN resource_versions {v} ON {v}.res_type = {r}.res_type AND {v}.res_id = {r}.res_id AND {v}.version_id = {r}.version_id", t);
            sql.push(" JOIN idx_reference ").push(&x).push(" ON ").push(&x).pusha(".res_pk = {r}.pk", t);
            sql.push(" JOIN resources ").push(&target).push(" ON ").push(&target).push(".res_type = ").push(&x);
            sql.push(".target_type AND ").push(&target).push(".res_id = ").push(&x).push(".target_id");
            sql.push(" WHERE ").push(&type_column(&format!("{}.res_type", t.r), Some(inner))).push(" = ");
            sql.bind_text(source_type).pusha(" AND {r}.deleted = 0", t);
            sql.push(" AND ").push(&x).push(".param = ").bind_text(param);
            sql.push(" AND ").push(&target).push(".res_type IN ").bind_list(&a.types);
            sql.push(" AND ");
            push_clause(sql, inner, source_type, access, t, n);
            sql.push(" AND ");
            push_access_as(sql, &access.of(std::slice::from_ref(source_type)), &t.v);
            sql.push(")");
        }
    }
}

/// `{r}.pk IN (SELECT res_pk FROM <table> WHERE res_type IN (...) AND param = ? AND (v1 OR v2 ...))`:
/// the shape of every index match, so that the index, not the resource table, drives the query.
fn push_index_match<T>(
    sql: &mut Sql,
    a: &Alias,
    table: &str,
    alias: &str,
    param: &str,
    values: &[T],
    mut each: impl FnMut(&mut Sql, &T),
) {
    if a.correlated {
        sql.push("EXISTS (SELECT 1 FROM ").push(table).push(" ").push(alias).push(" WHERE ").push(alias);
        sql.pusha(".res_pk = {r}.pk", a);
    } else {
        sql.pusha("{r}.pk IN (SELECT ", a).push(alias).push(".res_pk FROM ").push(table).push(" ").push(alias);
        sql.push(" WHERE ").push(alias).push(".res_type IN ").bind_list(&a.types);
    }
    sql.push(" AND ").push(alias).push(".param = ").bind_text(param).push(" AND (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        each(sql, v);
    }
    sql.push("))");
}

/// `%`, `_` and `\` are data in a search value.
fn like_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A number prefix over a stored value column.
fn push_number(sql: &mut Sql, v: &NumberValue, col: &str) {
    let f = SqlValue::Float;
    match v.prefix {
        // The implicit range of the value's precision, [low, high).
        DatePrefix::Eq => sql
            .push("(")
            .push(col)
            .push(" >= ")
            .bind(f(v.low))
            .push(" AND ")
            .push(col)
            .push(" < ")
            .bind(f(v.high))
            .push(")"),
        DatePrefix::Ne => sql
            .push("NOT (")
            .push(col)
            .push(" >= ")
            .bind(f(v.low))
            .push(" AND ")
            .push(col)
            .push(" < ")
            .bind(f(v.high))
            .push(")"),
        DatePrefix::Gt => sql.push(col).push(" > ").bind(f(v.value)),
        DatePrefix::Lt => sql.push(col).push(" < ").bind(f(v.value)),
        DatePrefix::Ge => sql.push(col).push(" >= ").bind(f(v.value)),
        DatePrefix::Le => sql.push(col).push(" <= ").bind(f(v.value)),
        DatePrefix::Sa => sql.push(col).push(" > ").bind(f(v.high)),
        DatePrefix::Eb => sql.push(col).push(" < ").bind(f(v.low)),
        DatePrefix::Ap => {
            // Within 10% of the value.
            let (a, b) = (v.value * 0.9, v.value * 1.1);
            sql.push("(")
                .push(col)
                .push(" >= ")
                .bind(f(a.min(b)))
                .push(" AND ")
                .push(col)
                .push(" <= ")
                .bind(f(a.max(b)))
                .push(")")
        }
    };
}

/// A date prefix over a target span `[lo, hi]` (column names) and the search span.
fn push_date(sql: &mut Sql, v: &DateValue, lo: &str, hi: &str) {
    let (l, h) = (SqlValue::Int(v.range.low), SqlValue::Int(v.range.high));
    let contained = |sql: &mut Sql| {
        sql.push("(")
            .push(lo)
            .push(" >= ")
            .bind(l.clone())
            .push(" AND ")
            .push(hi)
            .push(" <= ")
            .bind(h.clone())
            .push(")");
    };
    match v.prefix {
        DatePrefix::Eq => contained(sql),
        DatePrefix::Ne => {
            sql.push("NOT ");
            contained(sql);
        }
        DatePrefix::Gt => {
            sql.push(hi).push(" > ").bind(h.clone());
        }
        DatePrefix::Lt => {
            sql.push(lo).push(" < ").bind(l.clone());
        }
        DatePrefix::Ge => {
            sql.push("(").push(hi).push(" > ").bind(h.clone()).push(" OR ");
            contained(sql);
            sql.push(")");
        }
        DatePrefix::Le => {
            sql.push("(").push(lo).push(" < ").bind(l.clone()).push(" OR ");
            contained(sql);
            sql.push(")");
        }
        DatePrefix::Sa => {
            sql.push(lo).push(" > ").bind(h.clone());
        }
        DatePrefix::Eb => {
            sql.push(hi).push(" < ").bind(l.clone());
        }
        DatePrefix::Ap => {
            sql.push("(")
                .push(lo)
                .push(" <= ")
                .bind(h.clone())
                .push(" AND ")
                .push(hi)
                .push(" >= ")
                .bind(l.clone())
                .push(")");
        }
    }
}

const CURRENT_JOIN: &str = " FROM resources r JOIN resource_versions v ON v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id";

fn search_where(sql: &mut Sql, access: &AccessPredicate, query: &SearchQuery) {
    let driver = driver(query);
    let column = type_column("r.res_type", driver.map(|i| &query.clauses[i]));
    match query.types.as_slice() {
        [] => sql.push(" WHERE ").push(&column).push(" = ").bind_text(&query.resource_type),
        types => sql.push(" WHERE ").push(&column).push(" IN ").bind_list(types),
    };
    sql.push(" AND r.deleted = 0");
    push_clauses(sql, query, access, driver);
    sql.push(" AND ");
    push_access_current(sql, access);
}

/// Current resources matching a search, one page.
pub fn search(access: &AccessPredicate, query: &SearchQuery, page: Page) -> Sql {
    let mut sql = Sql::new("SELECT ");
    sql.push(VERSION_COLUMNS).push(CURRENT_JOIN);
    search_where(&mut sql, access, query);
    push_order(&mut sql, query);
    sql.push(" LIMIT ").bind(SqlValue::Int(page.limit as i64)).push(" OFFSET ").bind(SqlValue::Int(page.offset as i64));
    sql
}

/// The index column a sort key orders by, lowest (ascending) or highest (descending) of a
/// resource's values.
fn sort_expression(
    code: &str,
    kind: SearchParamType,
    descending: bool,
) -> Option<(&'static str, &'static str, &'static str)> {
    let agg = if descending { "MAX" } else { "MIN" };
    let (table, column) = match kind {
        SearchParamType::Date if descending => ("idx_date", "high"),
        SearchParamType::Date => ("idx_date", "low"),
        SearchParamType::String => ("idx_string", "normalized"),
        SearchParamType::Token => ("idx_token", "code"),
        SearchParamType::Reference => ("idx_reference", "url"),
        SearchParamType::Number => ("idx_number", "value"),
        SearchParamType::Quantity => ("idx_quantity", "value"),
        SearchParamType::Uri => ("idx_uri", "value"),
        _ => return None,
    };
    let _ = code;
    Some((agg, table, column))
}

/// `ORDER BY` for `_sort`, missing values last in both directions, ties by insertion.
fn push_order(sql: &mut Sql, query: &SearchQuery) {
    sql.push(" ORDER BY ");
    for key in &query.sort {
        let dir = if key.descending { " DESC" } else { " ASC" };
        match &key.by {
            SortBy::Id => {
                sql.push("r.res_id").push(dir).push(", ");
            }
            SortBy::LastUpdated => {
                sql.push("v.last_updated").push(dir).push(", ");
            }
            SortBy::Param { code, kind } => {
                if let Some((agg, table, column)) = sort_expression(code, *kind, key.descending) {
                    for nulls_last in [true, false] {
                        sql.push("(SELECT ").push(agg).push("(o.").push(column).push(") FROM ").push(table);
                        sql.push(" o WHERE o.res_pk = r.pk AND o.param = ").bind_text(code).push(")");
                        if nulls_last {
                            sql.push(" IS NULL, ");
                        } else {
                            sql.push(dir).push(", ");
                        }
                    }
                }
            }
        }
    }
    sql.push("r.pk");
}

/// How many current resources match a search.
pub fn search_count(access: &AccessPredicate, query: &SearchQuery) -> Sql {
    let mut sql = Sql::new("SELECT COUNT(*)");
    sql.push(CURRENT_JOIN);
    search_where(&mut sql, access, query);
    sql
}

/// Ids of current resources matching a search (conditional interactions).
pub fn find_ids(access: &AccessPredicate, query: &SearchQuery, limit: usize) -> Sql {
    let mut sql = Sql::new("SELECT r.res_id");
    sql.push(CURRENT_JOIN);
    search_where(&mut sql, access, query);
    sql.push(" ORDER BY r.pk LIMIT ").bind(SqlValue::Int(limit as i64));
    sql
}

/// The current version of one resource.
pub fn read(access: &AccessPredicate, resource_type: &str, id: &str) -> Sql {
    let mut sql = Sql::new("SELECT ");
    sql.push(VERSION_COLUMNS).push(CURRENT_JOIN);
    sql.push(" WHERE r.res_type = ").bind_text(resource_type).push(" AND r.res_id = ").bind_text(id).push(" AND ");
    push_access_current(&mut sql, access);
    sql
}

/// One version of one resource.
pub fn vread(access: &AccessPredicate, resource_type: &str, id: &str, version: u64) -> Sql {
    let mut sql = Sql::new("SELECT ");
    sql.push(VERSION_COLUMNS).push(" FROM resource_versions v WHERE v.res_type = ");
    sql.bind_text(resource_type).push(" AND v.res_id = ").bind_text(id);
    sql.push(" AND v.version_id = ").bind(SqlValue::Int(version as i64)).push(" AND ");
    push_access(&mut sql, access);
    sql
}

/// A page of history, newest first.
pub fn history(access: &AccessPredicate, q: &HistoryQuery) -> Sql {
    let mut sql = Sql::new("SELECT ");
    sql.push(VERSION_COLUMNS).push(" FROM resource_versions v WHERE ");
    match &q.level {
        HistoryLevel::Instance { resource_type, id } => {
            sql.push("v.res_type = ").bind_text(resource_type).push(" AND v.res_id = ").bind_text(id);
        }
        HistoryLevel::Type { resource_type } => {
            sql.push("v.res_type = ").bind_text(resource_type);
        }
        HistoryLevel::System => {
            sql.push("1 = 1");
        }
    }
    if let Some(since) = q.since {
        sql.push(" AND v.last_updated >= ").bind(SqlValue::Int(since.millis));
    }
    if let Some(before) = q.before_seq {
        sql.push(" AND v.seq < ").bind(SqlValue::Int(before));
    }
    if let Some(max) = q.max_seq {
        sql.push(" AND v.seq <= ").bind(SqlValue::Int(max));
    }
    sql.push(" AND ");
    push_access(&mut sql, access);
    sql.push(" ORDER BY v.seq DESC LIMIT ").bind(SqlValue::Int(q.limit as i64));
    sql
}

/// Statements of the write path, shared by both backends.
pub mod write {
    /// Upsert of the current-resource row; yields its `pk`.
    pub const UPSERT_RESOURCE: &str = "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, compartment_key, labelled) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (res_type, res_id) DO UPDATE SET version_id = excluded.version_id, last_updated = excluded.last_updated, \
         deleted = excluded.deleted, compartment_key = excluded.compartment_key, labelled = excluded.labelled RETURNING pk";
    pub const INSERT_VERSION: &str = "INSERT INTO resource_versions (res_pk, res_type, res_id, version_id, last_updated, method, body, compartments, compartment_key) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
    /// PostgreSQL: lock a current row against concurrent writers.
    pub const LOCK_CURRENT: &str = "SELECT pk FROM resources WHERE res_type = ? AND res_id = ? FOR UPDATE";
    pub const DELETE_TOKENS: &str = "DELETE FROM idx_token WHERE res_pk = ?";
    pub const DELETE_STRINGS: &str = "DELETE FROM idx_string WHERE res_pk = ?";
    pub const DELETE_DATES: &str = "DELETE FROM idx_date WHERE res_pk = ?";
    pub const DELETE_REFERENCES: &str = "DELETE FROM idx_reference WHERE res_pk = ?";
    pub const INSERT_STRING: &str = "INSERT INTO idx_string (res_pk, res_type, param, normalized, exact, compartment_key) VALUES (?, ?, ?, ?, ?, ?)";
    pub const DELETE_NUMBERS: &str = "DELETE FROM idx_number WHERE res_pk = ?";
    pub const DELETE_QUANTITIES: &str = "DELETE FROM idx_quantity WHERE res_pk = ?";
    pub const DELETE_URIS: &str = "DELETE FROM idx_uri WHERE res_pk = ?";
    pub const INSERT_NUMBER: &str =
        "INSERT INTO idx_number (res_pk, res_type, param, value, compartment_key) VALUES (?, ?, ?, ?, ?)";
    pub const INSERT_QUANTITY: &str = "INSERT INTO idx_quantity (res_pk, res_type, param, value, system, code, unit, compartment_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    pub const INSERT_URI: &str =
        "INSERT INTO idx_uri (res_pk, res_type, param, value, compartment_key) VALUES (?, ?, ?, ?, ?)";
    pub const INSERT_DATE: &str =
        "INSERT INTO idx_date (res_pk, res_type, param, low, high, compartment_key) VALUES (?, ?, ?, ?, ?, ?)";
    pub const INSERT_REFERENCE: &str = "INSERT INTO idx_reference (res_pk, res_type, param, target_type, target_id, url, compartment_key) VALUES (?, ?, ?, ?, ?, ?, ?)";
    pub const INSERT_TOKEN: &str =
        "INSERT INTO idx_token (res_pk, res_type, param, system, code, compartment_key) VALUES (?, ?, ?, ?, ?, ?)";
    pub const INSERT_IMPORT: &str = "INSERT INTO imports (sha256, name, resources, imported_at) VALUES (?, ?, ?, ?)";
    pub const SELECT_IMPORT: &str = "SELECT 1 FROM imports WHERE sha256 = ?";
    /// Auth state (see migration 0006).
    pub const INSERT_JTI: &str =
        "INSERT INTO auth_jti (client_id, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING";
    pub const PURGE_JTI: &str = "DELETE FROM auth_jti WHERE expires_at < ?";
    pub const INSERT_REVOKED: &str =
        "INSERT INTO auth_revoked (token_id, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING";
    pub const PURGE_REVOKED: &str = "DELETE FROM auth_revoked WHERE expires_at < ?";
    /// Authorization grants (see migration 0007).
    pub const PURGE_GRANTS: &str = "DELETE FROM auth_grant WHERE keep_until < ?";
    pub const INSERT_GRANT: &str =
        "INSERT INTO auth_grant (id, kind, payload, valid_until, keep_until, used) VALUES (?, ?, ?, ?, ?, 0)";
    pub const USE_GRANT: &str =
        "UPDATE auth_grant SET used = 1 WHERE id = ? AND kind = ? AND used = 0 AND valid_until >= ?";
    pub const SELECT_GRANT: &str =
        "SELECT payload FROM auth_grant WHERE id = ? AND kind = ? AND used = ? AND valid_until >= ?";
    pub const SELECT_USED_GRANT: &str = "SELECT payload FROM auth_grant WHERE id = ? AND kind = ? AND used = 1";
    pub const INSERT_COMPARTMENT: &str = "INSERT INTO compartments (patient_id, res_pk, version_id) VALUES (?, ?, ?)";
}

/// Is any of these token ids revoked?
pub fn any_revoked(ids: &[String]) -> Sql {
    // `token_id = ? OR token_id = ?`: one primary-key probe per id (a user's token has two,
    // its own and its refresh family's), on every request.
    let mut sql = Sql::new("SELECT 1 FROM auth_revoked WHERE ");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("token_id = ").bind_text(id);
    }
    if ids.is_empty() {
        sql.push("1 = 0");
    }
    sql.push(" LIMIT 1");
    sql
}

/// The columns of `StoredVersion` as decoded from either backend.
pub struct RawVersion {
    pub res_type: String,
    pub res_id: String,
    pub version_id: i64,
    pub last_updated: i64,
    pub method: String,
    pub body: Option<Vec<u8>>,
    pub compartments: String,
    pub seq: i64,
}

impl RawVersion {
    pub fn into_stored(self) -> crate::Result<crate::StoredVersion> {
        let method = crate::Method::parse(&self.method)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("unknown method {:?}", self.method)))?;
        Ok(crate::StoredVersion {
            resource_type: self.res_type,
            id: self.res_id,
            version: self.version_id as u64,
            last_updated: bastion_fhir::primitives::Instant::from_millis(self.last_updated),
            method,
            body: self.body,
            compartments: split_compartments(&self.compartments),
            seq: self.seq,
        })
    }
}

/// Compartments are stored space-separated on the version row (ids never contain spaces).
pub fn join_compartments(c: &[String]) -> String {
    c.join(" ")
}

fn split_compartments(s: &str) -> Vec<String> {
    s.split(' ').filter(|p| !p.is_empty()).map(str::to_string).collect()
}

/// Which versions a read path returns, for [`recheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Current versions only (read, search): SQL and memory decide alike, so a row the
    /// in-memory check rejects is a bug.
    Current,
    /// Possibly older versions (vread, history): token predicates in SQL test the resource's
    /// current values, so only the in-memory check, on the version itself, is exact.
    Versions,
}

/// The in-memory half of "two evaluators": every row a read path returns is re-checked
/// against the predicate. A current row the SQL let through but the predicate rejects is a
/// bug in one of them; it is logged loudly and withheld, never returned.
pub fn recheck(
    access: &AccessPredicate,
    rows: Vec<crate::StoredVersion>,
    kind: Rows,
    referrers: &[Vec<String>],
) -> Vec<crate::StoredVersion> {
    let need = access.content_need();
    rows.into_iter()
        .enumerate()
        .filter(|(i, v)| {
            let parsed = match need {
                ContentNeed::Nothing => None,
                ContentNeed::Meta => v.body.as_deref().and_then(|b| meta_only(&v.resource_type, b)),
                ContentNeed::Everything => v.body.as_deref().and_then(|b| serde_json::from_slice(b).ok()),
            };
            let row = AccessRow {
                resource_type: &v.resource_type,
                id: &v.id,
                compartments: &v.compartments,
                resource: parsed.as_ref(),
                referrers: referrers.get(*i).map(Vec::as_slice).unwrap_or(&[]),
            };
            let ok = access.admits(&row);
            if !ok && kind == Rows::Current {
                tracing::error!(
                    resource_type = %v.resource_type,
                    "access predicate disagreement: SQL admitted a row the in-memory check rejects; row withheld"
                );
            }
            ok
        })
        .map(|(_, v)| v)
        .collect()
}

/// `resourceType` and `meta` of a stored body, all that a predicate on labels and tags
/// reads; a body that mentions neither `security` nor `tag` (most) is not parsed at all.
fn meta_only(resource_type: &str, body: &[u8]) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct Meta {
        meta: Option<serde_json::Value>,
    }
    let meta = if bastion_fhir::labels::bytes_contain(body, b"\"security\"")
        || bastion_fhir::labels::bytes_contain(body, b"\"tag\"")
    {
        serde_json::from_slice::<Meta>(body).ok()?.meta
    } else {
        None
    };
    let mut out = serde_json::json!({"resourceType": resource_type});
    if let Some(m) = meta {
        out["meta"] = m;
    }
    Some(out)
}

/// Which of `patients` have a current resource in their compartment that refers to
/// `resource_type/id` (the facts [`AccessRow::referrers`] holds).
pub fn referrers(resource_type: &str, id: &str, patients: &[String]) -> Sql {
    let mut sql = Sql::new(
        "SELECT DISTINCT rc.patient_id FROM idx_reference rf JOIN resources rr ON rr.pk = rf.res_pk \
         JOIN compartments rc ON rc.res_pk = rr.pk AND rc.version_id = rr.version_id WHERE rf.target_id = ",
    );
    sql.bind_text(id).push(" AND rf.target_type = ").bind_text(resource_type).push(" AND rc.patient_id IN ");
    sql.bind_list(patients);
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(to_postgres_placeholders("a = ? AND b IN (?, ?)"), "a = $1 AND b IN ($2, $3)");
    }

    #[test]
    fn values_are_bound_not_spliced() {
        let q = SearchQuery::parse("Patient", &[("identifier".into(), "x' OR '1'='1".into())]).unwrap();
        let sql = search(
            &AccessPredicate::PatientCompartment(vec!["p'--".into()]),
            &q,
            Page { offset: 0, limit: 10, with_total: false },
        );
        assert!(!sql.text.contains("x'"));
        assert!(!sql.text.contains("p'--"));
        assert_eq!(sql.text.matches('?').count(), sql.params.len());
    }
}
