//! Every store operation, written once over [`Conn`]: a backend only knows how to run one
//! bound statement. The SQL comes from [`crate::sql`]; the access predicate is compiled
//! into it and re-checked on every row that comes back.

use async_trait::async_trait;
use bastion_search::{AccessPredicate, SearchQuery};

use crate::sql::{self, Sql, SqlValue};
use crate::{HistoryQuery, NewVersion, Page, Result, SearchPage, StoredVersion};

/// One connection (or transaction) of a backend.
#[async_trait]
pub(crate) trait Conn: Send + Sync {
    /// Rows of [`sql::VERSION_COLUMNS`].
    async fn versions(&self, sql: &Sql) -> Result<Vec<StoredVersion>>;
    /// The first column of every row, as text.
    async fn texts(&self, sql: &Sql) -> Result<Vec<String>>;
    /// The first column of the first row, as an integer.
    async fn int(&self, sql: &Sql) -> Result<Option<i64>>;
    async fn execute(&self, sql: &Sql) -> Result<u64>;
    /// Runs statements in order. A backend over a network pipelines them (one round trip
    /// instead of one per index row).
    async fn execute_all(&self, stmts: &[Sql]) -> Result<()> {
        for s in stmts {
            self.execute(s).await?;
        }
        Ok(())
    }
}

/// The rows the predicate admits, checked in memory (see [`sql::recheck`]); the referrer
/// facts are looked up first when the predicate needs them.
async fn recheck(
    c: &dyn Conn,
    access: &AccessPredicate,
    rows: Vec<StoredVersion>,
    kind: sql::Rows,
) -> Result<Vec<StoredVersion>> {
    let patients = access.referrer_patients();
    let mut referrers = Vec::new();
    if !patients.is_empty() {
        for v in &rows {
            referrers.push(c.texts(&sql::referrers(&v.resource_type, &v.id, &patients)).await?);
        }
    }
    Ok(sql::recheck(access, rows, kind, &referrers))
}

fn stmt(text: &str, params: Vec<SqlValue>) -> Sql {
    Sql { text: text.to_string(), params }
}

pub(crate) async fn read(
    c: &dyn Conn,
    access: &AccessPredicate,
    rtype: &str,
    id: &str,
) -> Result<Option<StoredVersion>> {
    Ok(recheck(c, access, c.versions(&sql::read(access, rtype, id)).await?, sql::Rows::Current)
        .await?
        .into_iter()
        .next())
}

pub(crate) async fn vread(
    c: &dyn Conn,
    access: &AccessPredicate,
    rtype: &str,
    id: &str,
    version: u64,
) -> Result<Option<StoredVersion>> {
    Ok(recheck(c, access, c.versions(&sql::vread(access, rtype, id, version)).await?, sql::Rows::Versions)
        .await?
        .into_iter()
        .next())
}

pub(crate) async fn history(c: &dyn Conn, access: &AccessPredicate, q: &HistoryQuery) -> Result<Vec<StoredVersion>> {
    recheck(c, access, c.versions(&sql::history(access, q)).await?, sql::Rows::Versions).await
}

pub(crate) async fn search(c: &dyn Conn, access: &AccessPredicate, q: &SearchQuery, page: Page) -> Result<SearchPage> {
    let items = recheck(c, access, c.versions(&sql::search(access, q, page)).await?, sql::Rows::Current).await?;
    let total = match page.with_total {
        true => Some(c.int(&sql::search_count(access, q)).await?.unwrap_or(0) as u64),
        false => None,
    };
    Ok(SearchPage { items, total })
}

pub(crate) async fn imported(c: &dyn Conn, sha256: &str) -> Result<bool> {
    Ok(c.int(&stmt(sql::write::SELECT_IMPORT, vec![SqlValue::Text(sha256.into())])).await?.is_some())
}

pub(crate) async fn find_ids(
    c: &dyn Conn,
    access: &AccessPredicate,
    q: &SearchQuery,
    limit: usize,
) -> Result<Vec<String>> {
    c.texts(&sql::find_ids(access, q, limit)).await
}

/// Records a client assertion's `jti` (until `expires_at`, Unix seconds); `false` when this
/// client used it before. Expired records are dropped on the way.
pub(crate) async fn remember_jti(c: &dyn Conn, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
    c.execute(&stmt(sql::write::PURGE_JTI, vec![SqlValue::Int(now)])).await?;
    let inserted = c
        .execute(&stmt(
            sql::write::INSERT_JTI,
            vec![SqlValue::Text(client_id.into()), SqlValue::Text(jti.into()), SqlValue::Int(expires_at)],
        ))
        .await?;
    Ok(inserted == 1)
}

/// Marks a token id revoked until `expires_at` (Unix seconds).
pub(crate) async fn revoke(c: &dyn Conn, token_id: &str, expires_at: i64, now: i64) -> Result<()> {
    c.execute(&stmt(sql::write::PURGE_REVOKED, vec![SqlValue::Int(now)])).await?;
    c.execute(&stmt(sql::write::INSERT_REVOKED, vec![SqlValue::Text(token_id.into()), SqlValue::Int(expires_at)]))
        .await?;
    Ok(())
}

/// Stores a grant (see [`crate::Grant`]); expired ones are dropped on the way.
pub(crate) async fn put_grant(c: &dyn Conn, g: &crate::Grant, now: i64) -> Result<()> {
    c.execute(&stmt(sql::write::PURGE_GRANTS, vec![SqlValue::Int(now)])).await?;
    c.execute(&stmt(
        sql::write::INSERT_GRANT,
        vec![
            SqlValue::Text(g.id.clone()),
            SqlValue::Text(g.kind.into()),
            SqlValue::Text(g.payload.clone()),
            SqlValue::Int(g.valid_until),
            SqlValue::Int(g.keep_until),
        ],
    ))
    .await?;
    Ok(())
}

fn grant_key(kind: &str, id: &str, used: i64, now: i64) -> Vec<SqlValue> {
    vec![SqlValue::Text(id.into()), SqlValue::Text(kind.into()), SqlValue::Int(used), SqlValue::Int(now)]
}

/// A grant's payload while it is valid and unused, without using it.
pub(crate) async fn peek_grant(c: &dyn Conn, kind: &str, id: &str, now: i64) -> Result<Option<String>> {
    Ok(c.texts(&stmt(sql::write::SELECT_GRANT, grant_key(kind, id, 0, now))).await?.into_iter().next())
}

/// Uses a grant: the first use within its validity gets the payload, every later one is
/// told so. The update is the single point of decision, so two nodes racing for one code
/// cannot both win.
pub(crate) async fn use_grant(c: &dyn Conn, kind: &str, id: &str, now: i64) -> Result<crate::GrantUse> {
    let won = c
        .execute(&stmt(
            sql::write::USE_GRANT,
            vec![SqlValue::Text(id.into()), SqlValue::Text(kind.into()), SqlValue::Int(now)],
        ))
        .await?;
    if won == 1 {
        let payload = c.texts(&stmt(sql::write::SELECT_GRANT, grant_key(kind, id, 1, now))).await?;
        return Ok(payload.into_iter().next().map_or(crate::GrantUse::Unknown, crate::GrantUse::First));
    }
    let used = c
        .texts(&stmt(sql::write::SELECT_USED_GRANT, vec![SqlValue::Text(id.into()), SqlValue::Text(kind.into())]))
        .await?;
    Ok(used.into_iter().next().map_or(crate::GrantUse::Unknown, crate::GrantUse::Again))
}

pub(crate) async fn any_revoked(c: &dyn Conn, ids: &[String]) -> Result<bool> {
    if ids.is_empty() {
        return Ok(false);
    }
    Ok(c.int(&sql::any_revoked(ids)).await?.is_some())
}

pub(crate) async fn latest_change(c: &dyn Conn, types: &[&str]) -> Result<i64> {
    if types.is_empty() {
        return Ok(0);
    }
    // One indexed MAX per type (resource_versions_type_seq), however many versions there are.
    let mut text = String::from("SELECT COALESCE(MAX(s), 0) FROM (");
    let mut params = Vec::new();
    for (i, t) in types.iter().enumerate() {
        if i > 0 {
            text.push_str(" UNION ALL ");
        }
        text.push_str("SELECT MAX(seq) AS s FROM resource_versions WHERE res_type = ?");
        params.push(SqlValue::Text(t.to_string()));
    }
    text.push_str(") m");
    Ok(c.int(&stmt(&text, params)).await?.unwrap_or(0))
}

pub(crate) async fn record_import(c: &dyn Conn, sha256: &str, name: &str, resources: u64) -> Result<()> {
    let now = bastion_fhir::primitives::Instant::now().millis;
    c.execute(&stmt(
        sql::write::INSERT_IMPORT,
        vec![
            SqlValue::Text(sha256.into()),
            SqlValue::Text(name.into()),
            SqlValue::Int(resources as i64),
            SqlValue::Int(now),
        ],
    ))
    .await?;
    Ok(())
}

const ALL_INDEX_DELETES: [&str; 7] = [
    sql::write::DELETE_TOKENS,
    sql::write::DELETE_STRINGS,
    sql::write::DELETE_DATES,
    sql::write::DELETE_REFERENCES,
    sql::write::DELETE_NUMBERS,
    sql::write::DELETE_QUANTITIES,
    sql::write::DELETE_URIS,
];

/// Writes a version, makes it current, and replaces the resource's index rows.
pub(crate) async fn write_version(c: &dyn Conn, v: NewVersion) -> Result<()> {
    let key = SqlValue::OptText(v.index.compartment_key().map(str::to_string));
    let text = |s: &str| SqlValue::Text(s.to_string());
    let version = SqlValue::Int(v.version as i64);
    let pk = c
        .int(&stmt(
            sql::write::UPSERT_RESOURCE,
            vec![
                text(&v.resource_type),
                text(&v.id),
                version.clone(),
                SqlValue::Int(v.last_updated.millis),
                SqlValue::Int(v.body.is_none() as i64),
                key.clone(),
                SqlValue::Int(v.index.tokens.iter().any(|t| t.param == "_security") as i64),
            ],
        ))
        .await?
        .ok_or_else(|| crate::StoreError::Corrupt("upsert returned no key".into()))?;
    let is_tombstone = v.body.is_none();
    c.execute(&stmt(
        sql::write::INSERT_VERSION,
        vec![
            SqlValue::Int(pk),
            text(&v.resource_type),
            text(&v.id),
            version.clone(),
            SqlValue::Int(v.last_updated.millis),
            text(v.method.as_str()),
            SqlValue::OptBlob(v.body),
            text(&sql::join_compartments(&v.index.compartments)),
            key.clone(),
        ],
    ))
    .await?;
    let mut batch = Vec::with_capacity(16 + v.index.tokens.len() + v.index.strings.len());
    // Version 1 is the first the resource ever had: there are no old rows to remove.
    let replaces = if v.version > 1 { &ALL_INDEX_DELETES[..] } else { &[] };
    for delete in replaces {
        batch.push(stmt(delete, vec![SqlValue::Int(pk)]));
    }
    if !is_tombstone {
        let head = |param: &str| vec![SqlValue::Int(pk), text(&v.resource_type), text(param)];
        for s in &v.index.strings {
            let mut p = head(&s.param);
            p.extend([text(&s.normalized), text(&s.exact), key.clone()]);
            batch.push(stmt(sql::write::INSERT_STRING, p));
        }
        for d in &v.index.dates {
            let mut p = head(&d.param);
            p.extend([SqlValue::Int(d.low), SqlValue::Int(d.high), key.clone()]);
            batch.push(stmt(sql::write::INSERT_DATE, p));
        }
        for r in &v.index.references {
            let mut p = head(&r.param);
            p.extend([
                SqlValue::OptText(r.target_type.clone()),
                SqlValue::OptText(r.target_id.clone()),
                text(&r.url),
                key.clone(),
            ]);
            batch.push(stmt(sql::write::INSERT_REFERENCE, p));
        }
        for n in &v.index.numbers {
            let mut p = head(&n.param);
            p.extend([SqlValue::Float(n.value), key.clone()]);
            batch.push(stmt(sql::write::INSERT_NUMBER, p));
        }
        for q in &v.index.quantities {
            let mut p = head(&q.param);
            p.extend([
                SqlValue::Float(q.value),
                SqlValue::OptText(q.system.clone()),
                SqlValue::OptText(q.code.clone()),
                SqlValue::OptText(q.unit.clone()),
                key.clone(),
            ]);
            batch.push(stmt(sql::write::INSERT_QUANTITY, p));
        }
        for u in &v.index.uris {
            let mut p = head(&u.param);
            p.extend([text(&u.value), key.clone()]);
            batch.push(stmt(sql::write::INSERT_URI, p));
        }
        for t in &v.index.tokens {
            batch.push(stmt(
                sql::write::INSERT_TOKEN,
                vec![
                    SqlValue::Int(pk),
                    text(&v.resource_type),
                    text(&t.param),
                    SqlValue::OptText(t.system.clone()),
                    text(&t.code),
                    key.clone(),
                ],
            ));
        }
    }
    for p in &v.index.compartments {
        batch.push(stmt(sql::write::INSERT_COMPARTMENT, vec![text(p), SqlValue::Int(pk), version.clone()]));
    }
    c.execute_all(&batch).await?;
    Ok(())
}
