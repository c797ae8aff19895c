//! The PostgreSQL backend: a deadpool of connections; the SQL is the same as SQLite's (see
//! [`crate::sql`]) with `$n` placeholders, and every operation is [`crate::ops`]'.

use async_trait::async_trait;
use bastion_search::{AccessPredicate, SearchQuery};
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::ops::{self, Conn};
use crate::sql::{self, RawVersion, Sql, SqlValue};
use crate::{
    HistoryQuery, NewVersion, Page, Result, SearchPage, Store, StoreError, StoreTx, StoredVersion, migrations,
};

fn as_params(values: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| match v {
            SqlValue::Int(i) => i as &(dyn ToSql + Sync),
            SqlValue::Float(f) => f as &(dyn ToSql + Sync),
            SqlValue::Text(s) => s as &(dyn ToSql + Sync),
            SqlValue::OptText(s) => s as &(dyn ToSql + Sync),
            SqlValue::OptBlob(b) => b as &(dyn ToSql + Sync),
        })
        .collect()
}

fn decode(row: &Row) -> Result<StoredVersion> {
    RawVersion {
        res_type: row.try_get(0)?,
        res_id: row.try_get(1)?,
        version_id: row.try_get(2)?,
        last_updated: row.try_get(3)?,
        method: row.try_get(4)?,
        body: row.try_get(5)?,
        compartments: row.try_get(6)?,
        seq: row.try_get(7)?,
    }
    .into_stored()
}

async fn query(client: &ClientWrapper, sql: &Sql) -> Result<Vec<Row>> {
    let stmt = client.prepare_cached(&sql::to_postgres_placeholders(&sql.text)).await?;
    Ok(client.query(&stmt, &as_params(&sql.params)).await?)
}

/// A pooled connection, or the one a transaction holds.
struct PgConn<'a>(&'a ClientWrapper);

#[async_trait]
impl Conn for PgConn<'_> {
    async fn versions(&self, sql: &Sql) -> Result<Vec<StoredVersion>> {
        query(self.0, sql).await?.iter().map(decode).collect()
    }

    async fn texts(&self, sql: &Sql) -> Result<Vec<String>> {
        Ok(query(self.0, sql).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    async fn int(&self, sql: &Sql) -> Result<Option<i64>> {
        Ok(match query(self.0, sql).await?.first() {
            Some(r) => Some(r.try_get::<_, i64>(0).or_else(|_| r.try_get::<_, i32>(0).map(i64::from))?),
            None => None,
        })
    }

    async fn execute(&self, sql: &Sql) -> Result<u64> {
        let stmt = self.0.prepare_cached(&sql::to_postgres_placeholders(&sql.text)).await?;
        self.0.execute(&stmt, &as_params(&sql.params)).await.map_err(map_unique_violation)
    }

    /// Pipelined: tokio-postgres sends every statement before reading the first reply,
    /// and the server runs them in order on this connection.
    async fn execute_all(&self, stmts: &[Sql]) -> Result<()> {
        let mut prepared = Vec::with_capacity(stmts.len());
        for s in stmts {
            prepared.push(self.0.prepare_cached(&sql::to_postgres_placeholders(&s.text)).await?);
        }
        let params: Vec<_> = stmts.iter().map(|s| as_params(&s.params)).collect();
        futures::future::try_join_all(prepared.iter().zip(&params).map(|(st, p)| self.0.execute(st, p)))
            .await
            .map_err(map_unique_violation)?;
        Ok(())
    }
}

pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| StoreError::Config(format!("storage.url: {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(16).build().map_err(|e| StoreError::Pool(e.to_string()))?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        // Several servers may start against one database: serialise their migrations.
        client.batch_execute("SELECT pg_advisory_lock(7242024)").await?;
        let result = async {
            client.batch_execute(migrations::CREATE_TABLE).await?;
            let applied: Vec<i64> =
                client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
            for m in migrations::pending(migrations::POSTGRES, &applied) {
                let tx = client.transaction().await?;
                tx.batch_execute(&m.text())
                    .await
                    .map_err(|e| StoreError::Migration { version: m.version, reason: e.to_string() })?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[&(m.version as i64), &bastion_fhir::primitives::Instant::now().millis],
                )
                .await?;
                tx.commit().await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        client.batch_execute("SELECT pg_advisory_unlock(7242024)").await?;
        result
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn begin(&self) -> Result<Box<dyn StoreTx>> {
        let client = self.client().await?;
        client.batch_execute("BEGIN").await?;
        Ok(Box::new(PgTx { client: Some(client) }))
    }

    async fn read(&self, access: &AccessPredicate, resource_type: &str, id: &str) -> Result<Option<StoredVersion>> {
        ops::read(&PgConn(&*self.client().await?), access, resource_type, id).await
    }

    async fn vread(
        &self,
        access: &AccessPredicate,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredVersion>> {
        ops::vread(&PgConn(&*self.client().await?), access, resource_type, id, version).await
    }

    async fn history(&self, access: &AccessPredicate, q: &HistoryQuery) -> Result<Vec<StoredVersion>> {
        ops::history(&PgConn(&*self.client().await?), access, q).await
    }

    async fn search(&self, access: &AccessPredicate, q: &SearchQuery, page: Page) -> Result<SearchPage> {
        let client = self.client().await?;
        // Page and count in one snapshot.
        client.batch_execute("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let result = ops::search(&PgConn(&client), access, q, page).await;
        client.batch_execute("COMMIT").await?;
        result
    }

    async fn imported(&self, sha256: &str) -> Result<bool> {
        ops::imported(&PgConn(&*self.client().await?), sha256).await
    }

    async fn any_revoked(&self, token_ids: &[String]) -> Result<bool> {
        ops::any_revoked(&PgConn(&*self.client().await?), token_ids).await
    }

    async fn peek_grant(&self, kind: &str, id: &str, now: i64) -> Result<Option<String>> {
        ops::peek_grant(&PgConn(&*self.client().await?), kind, id, now).await
    }

    async fn latest_change(&self, types: &[&str]) -> Result<i64> {
        ops::latest_change(&PgConn(&*self.client().await?), types).await
    }
}

/// A write transaction on one pooled connection.
pub struct PgTx {
    client: Option<Object>,
}

impl PgTx {
    fn conn(&self) -> PgConn<'_> {
        PgConn(self.client.as_ref().expect("transaction already finished"))
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Not committed, and no async rollback is possible here: take the connection out
            // of the pool and drop it, so the server rolls the transaction back.
            drop(Object::take(client));
        }
    }
}

/// Two writers racing to create the same new resource: the loser gets a conflict.
fn map_unique_violation(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict("unique violation".into())
    } else {
        StoreError::Postgres(e)
    }
}

#[async_trait]
impl StoreTx for PgTx {
    async fn current(&mut self, resource_type: &str, id: &str) -> Result<Option<StoredVersion>> {
        // Lock the current row first, alone, then read it in a new statement: under READ
        // COMMITTED a join locked in one statement would re-check the newer current row
        // against version rows from the old snapshot, and miss a version that a concurrent
        // writer committed while we waited.
        let lock = Sql {
            text: sql::write::LOCK_CURRENT.into(),
            params: vec![SqlValue::Text(resource_type.into()), SqlValue::Text(id.into())],
        };
        if self.conn().int(&lock).await?.is_none() {
            return Ok(None);
        }
        ops::read(&self.conn(), &AccessPredicate::AllowAll, resource_type, id).await
    }

    async fn write_version(&mut self, v: NewVersion) -> Result<()> {
        ops::write_version(&self.conn(), v).await
    }

    async fn find_ids(&mut self, access: &AccessPredicate, q: &SearchQuery, limit: usize) -> Result<Vec<String>> {
        ops::find_ids(&self.conn(), access, q, limit).await
    }

    async fn remember_jti(&mut self, client_id: &str, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        ops::remember_jti(&self.conn(), client_id, jti, expires_at, now).await
    }

    async fn revoke(&mut self, token_id: &str, expires_at: i64, now: i64) -> Result<()> {
        ops::revoke(&self.conn(), token_id, expires_at, now).await
    }

    async fn put_grant(&mut self, grant: &crate::Grant, now: i64) -> Result<()> {
        ops::put_grant(&self.conn(), grant, now).await
    }

    async fn use_grant(&mut self, kind: &str, id: &str, now: i64) -> Result<crate::GrantUse> {
        ops::use_grant(&self.conn(), kind, id, now).await
    }

    async fn record_import(&mut self, sha256: &str, name: &str, resources: u64) -> Result<()> {
        ops::record_import(&self.conn(), sha256, name, resources).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let client = self.client.take().expect("transaction already finished");
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => {
                drop(Object::take(client));
                Err(e.into())
            }
        }
    }
}
