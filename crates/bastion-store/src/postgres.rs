//! The PostgreSQL backend: a deadpool of connections; the SQL is the same as SQLite's (see
//! [`crate::sql`]) with `$n` placeholders.

use async_trait::async_trait;
use bastion_search::{AccessPredicate, SearchQuery};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::sql::{self, RawVersion, Sql, SqlValue};
use crate::{
    HistoryQuery, NewVersion, Page, Result, SearchPage, Store, StoreError, StoreTx, StoredVersion, migrations,
};

fn as_params(values: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| match v {
            SqlValue::Int(i) => i as &(dyn ToSql + Sync),
            SqlValue::Text(s) => s as &(dyn ToSql + Sync),
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

async fn query(client: &deadpool_postgres::ClientWrapper, sql: &Sql) -> Result<Vec<Row>> {
    let text = sql::to_postgres_placeholders(&sql.text);
    let stmt = client.prepare_cached(&text).await?;
    Ok(client.query(&stmt, &as_params(&sql.params)).await?)
}

async fn query_versions(client: &deadpool_postgres::ClientWrapper, sql: &Sql) -> Result<Vec<StoredVersion>> {
    query(client, sql).await?.iter().map(decode).collect()
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
                tx.batch_execute(m.sql)
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
        let client = self.client().await?;
        let rows = query_versions(&client, &sql::read(access, resource_type, id)).await?;
        Ok(sql::recheck(access, rows).into_iter().next())
    }

    async fn vread(
        &self,
        access: &AccessPredicate,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredVersion>> {
        let client = self.client().await?;
        let rows = query_versions(&client, &sql::vread(access, resource_type, id, version)).await?;
        Ok(sql::recheck(access, rows).into_iter().next())
    }

    async fn history(&self, access: &AccessPredicate, q: &HistoryQuery) -> Result<Vec<StoredVersion>> {
        let client = self.client().await?;
        let rows = query_versions(&client, &sql::history(access, q)).await?;
        Ok(sql::recheck(access, rows))
    }

    async fn search(&self, access: &AccessPredicate, q: &SearchQuery, page: Page) -> Result<SearchPage> {
        let client = self.client().await?;
        let items = sql::recheck(access, query_versions(&client, &sql::search(access, q, page)).await?);
        let total = if page.with_total {
            let rows = query(&client, &sql::search_count(access, q)).await?;
            Some(rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64)
        } else {
            None
        };
        Ok(SearchPage { items, total })
    }

    async fn imported(&self, sha256: &str) -> Result<bool> {
        let client = self.client().await?;
        let sql = sql::to_postgres_placeholders(sql::write::SELECT_IMPORT);
        Ok(!client.query(&sql, &[&sha256]).await?.is_empty())
    }
}

/// A write transaction on one pooled connection.
pub struct PgTx {
    client: Option<Object>,
}

impl PgTx {
    fn client(&self) -> &Object {
        self.client.as_ref().expect("transaction already finished")
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

fn map_unique_violation(e: tokio_postgres::Error, what: &str) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(what.to_string())
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
        let lock = sql::to_postgres_placeholders(sql::write::LOCK_CURRENT);
        if self.client().query(&lock, &[&resource_type, &id]).await?.is_empty() {
            return Ok(None);
        }
        let sql = sql::read(&AccessPredicate::AllowAll, resource_type, id);
        Ok(query_versions(self.client(), &sql).await?.into_iter().next())
    }

    async fn write_version(&mut self, v: NewVersion) -> Result<()> {
        let client = self.client();
        let what = format!("{}/{}", v.resource_type, v.id);
        let key = v.index.compartment_key().map(str::to_string);
        let upsert = client.prepare_cached(&sql::to_postgres_placeholders(sql::write::UPSERT_RESOURCE)).await?;
        let row = client
            .query_one(
                &upsert,
                &[
                    &v.resource_type,
                    &v.id,
                    &(v.version as i64),
                    &v.last_updated.millis,
                    &(v.body.is_none() as i64),
                    &key,
                ],
            )
            .await?;
        let pk: i64 = row.get(0);
        let insert = client.prepare_cached(&sql::to_postgres_placeholders(sql::write::INSERT_VERSION)).await?;
        client
            .execute(
                &insert,
                &[
                    &pk,
                    &v.resource_type,
                    &v.id,
                    &(v.version as i64),
                    &v.last_updated.millis,
                    &v.method.as_str(),
                    &v.body,
                    &sql::join_compartments(&v.index.compartments),
                    &key,
                ],
            )
            .await
            .map_err(|e| map_unique_violation(e, &what))?;
        let del = client.prepare_cached(&sql::to_postgres_placeholders(sql::write::DELETE_TOKENS)).await?;
        client.execute(&del, &[&pk]).await?;
        if v.body.is_some() && !v.index.tokens.is_empty() {
            let ins = client.prepare_cached(&sql::to_postgres_placeholders(sql::write::INSERT_TOKEN)).await?;
            for t in &v.index.tokens {
                client.execute(&ins, &[&pk, &v.resource_type, &t.param, &t.system, &t.code, &key]).await?;
            }
        }
        if !v.index.compartments.is_empty() {
            let ins = client.prepare_cached(&sql::to_postgres_placeholders(sql::write::INSERT_COMPARTMENT)).await?;
            for p in &v.index.compartments {
                client.execute(&ins, &[p, &pk, &(v.version as i64)]).await?;
            }
        }
        Ok(())
    }

    async fn find_ids(&mut self, access: &AccessPredicate, q: &SearchQuery, limit: usize) -> Result<Vec<String>> {
        let rows = query(self.client(), &sql::find_ids(access, q, limit)).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn record_import(&mut self, sha256: &str, name: &str, resources: u64) -> Result<()> {
        let sql = sql::to_postgres_placeholders(sql::write::INSERT_IMPORT);
        self.client()
            .execute(&sql, &[&sha256, &name, &(resources as i64), &bastion_fhir::primitives::Instant::now().millis])
            .await?;
        Ok(())
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
