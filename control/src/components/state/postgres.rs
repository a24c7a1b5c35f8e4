//! `state.postgresql` (v1 table layout, as Dapr's, so existing tables keep
//! working): `key text PRIMARY KEY, value jsonb, isbinary boolean,
//! insertdate, updatedate, expiredate`. The ETag is the row's `xmin`. JSON
//! values are stored as jsonb (PostgreSQL normalises their spacing and key
//! order, as with Dapr); other bytes as a base64 JSON string with
//! `isbinary = true`. Every conditional write is one statement, so the ETag
//! check and the write are atomic; transactions use one connection.

use super::query::{Dialect, Param, Query, QueryItem, QueryResult};
use super::*;
use base64::Engine;
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

pub struct PostgresStore {
    pool: Pool,
    table: String,
}

fn pg_err(e: impl std::fmt::Display) -> StateError {
    StateError::Store(format!("postgresql: {e}"))
}

/// The jsonb value and `isbinary` flag for stored bytes.
fn encode(value: &[u8]) -> (serde_json::Value, bool) {
    match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(v) => (v, false),
        Err(_) => (
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
            true,
        ),
    }
}

/// The stored bytes from `value::text`: PostgreSQL's own rendering of a
/// JSON value (as Dapr returns it), or the base64 payload of a binary one.
fn decode(text: String, binary: bool) -> Result<Bytes, StateError> {
    if !binary {
        return Ok(Bytes::from(text));
    }
    let Ok(serde_json::Value::String(s)) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Err(StateError::Store(
            "postgresql: a binary value is not a base64 string".into(),
        ));
    };
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map(Bytes::from)
        .map_err(|e| StateError::Store(format!("postgresql: bad base64 value: {e}")))
}

/// PostgreSQL ETags are transaction ids.
fn etag_arg(etag: Option<&str>) -> Result<Option<String>, StateError> {
    match etag.filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e) if e.parse::<u32>().is_ok() => Ok(Some(e.to_string())),
        Some(e) => Err(StateError::InvalidEtag(format!(
            "`{e}` is not a PostgreSQL row version"
        ))),
    }
}

impl PostgresStore {
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let table = metadata
            .get("tableName")
            .cloned()
            .unwrap_or_else(|| "state".into());
        if table.is_empty()
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!(
                "metadata `tableName` is `{table}`; expected letters, digits, _ and . only"
            ));
        }
        let pool = crate::components::metadata::postgres_pool(metadata)?;
        let client = pool
            .get()
            .await
            .map_err(|e| format!("cannot connect to postgresql: {e}"))?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    key text NOT NULL PRIMARY KEY,
                    value jsonb NOT NULL,
                    isbinary boolean NOT NULL,
                    insertdate timestamptz NOT NULL DEFAULT now(),
                    updatedate timestamptz NULL,
                    expiredate timestamptz NULL
                 );
                 ALTER TABLE {table} ADD COLUMN IF NOT EXISTS expiredate timestamptz NULL;"
            ))
            .await
            .map_err(|e| format!("cannot create table `{table}`: {e}"))?;
        drop(client);
        // `cleanupInterval` (Dapr's default 1h; 0 turns it off): expired rows
        // are deleted on that period (reads skip them either way).
        let every = crate::components::metadata::duration(
            metadata,
            "cleanupInterval",
            std::time::Duration::from_secs(3600),
        )?;
        if !every.is_zero() {
            let weak = pool.weak();
            let sql =
                format!("DELETE FROM {table} WHERE expiredate IS NOT NULL AND expiredate < now()");
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(pool) = weak.upgrade() else { return };
                    if let Ok(client) = pool.get().await {
                        let _ = client.execute(&sql, &[]).await;
                    }
                }
            });
        }
        Ok(Self { pool, table })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StateError> {
        self.pool.get().await.map_err(pg_err)
    }

    /// One write, on any client (plain or inside a transaction).
    async fn write<C: deadpool_postgres::GenericClient>(
        client: &C,
        table: &str,
        op: &TransactionOp,
    ) -> Result<(), StateError> {
        match op {
            TransactionOp::Upsert(s) => {
                let etag = etag_arg(s.etag.as_deref())?;
                let ttl_secs: i32 =
                    ttl(&s.metadata)?.map_or(0, |d| d.as_secs().min(i32::MAX as u64) as i32);
                let (value, binary) = encode(&s.value);
                let expire = "CASE WHEN $4::int > 0 THEN now() + make_interval(secs => $4::int) ELSE NULL END";
                let (sql, params): (String, Vec<&(dyn ToSql + Sync)>) = match (&etag, s.concurrency) {
                    (Some(etag), _) => (
                        format!(
                            "UPDATE {table} SET value = $2, isbinary = $3, updatedate = now(), expiredate = {expire}
                             WHERE key = $1 AND xmin::text = $5 AND (expiredate IS NULL OR expiredate > now())"
                        ),
                        vec![&s.key, &value, &binary, &ttl_secs, etag],
                    ),
                    (None, Concurrency::FirstWrite) => (
                        format!(
                            "INSERT INTO {table} (key, value, isbinary, expiredate) VALUES ($1, $2, $3, {expire})
                             ON CONFLICT (key) DO UPDATE SET value = $2, isbinary = $3, updatedate = now(), insertdate = now(), expiredate = {expire}
                             WHERE {table}.expiredate IS NOT NULL AND {table}.expiredate <= now()"
                        ),
                        vec![&s.key, &value, &binary, &ttl_secs],
                    ),
                    (None, Concurrency::LastWrite) => (
                        format!(
                            "INSERT INTO {table} (key, value, isbinary, expiredate) VALUES ($1, $2, $3, {expire})
                             ON CONFLICT (key) DO UPDATE SET value = $2, isbinary = $3, updatedate = now(), expiredate = {expire}"
                        ),
                        vec![&s.key, &value, &binary, &ttl_secs],
                    ),
                };
                let n = client
                    .execute(sql.as_str(), &params)
                    .await
                    .map_err(pg_err)?;
                if n == 0 {
                    return Err(StateError::EtagMismatch(format!("key `{}`", s.key)));
                }
            }
            TransactionOp::Delete(d) => {
                let etag = etag_arg(d.etag.as_deref())?;
                match etag {
                    Some(etag) => {
                        let n = client
                            .execute(
                                &format!(
                                    "DELETE FROM {table} WHERE key = $1 AND xmin::text = $2 AND (expiredate IS NULL OR expiredate > now())"
                                ),
                                &[&d.key, &etag],
                            )
                            .await
                            .map_err(pg_err)?;
                        if n == 0 {
                            return Err(StateError::EtagMismatch(format!("key `{}`", d.key)));
                        }
                    }
                    None => {
                        client
                            .execute(&format!("DELETE FROM {table} WHERE key = $1"), &[&d.key])
                            .await
                            .map_err(pg_err)?;
                    }
                }
            }
        }
        Ok(())
    }
}

struct PgDialect;

impl Dialect for PgDialect {
    fn field(&self, n: usize) -> String {
        format!("(value #> ${n}::text[])")
    }
    fn equals(&self, f: usize, v: usize) -> String {
        format!("{} = ${v}::jsonb", self.field(f))
    }
    fn placeholder(&self, n: usize) -> String {
        format!("${n}")
    }
    fn no_limit(&self) -> &'static str {
        "ALL"
    }
}

impl StateStore for PostgresStore {
    fn features(&self) -> Vec<&'static str> {
        vec![
            feature::ETAG,
            feature::TRANSACTIONAL,
            feature::TTL,
            feature::ACTOR,
            feature::QUERY_API,
        ]
    }

    fn query<'a>(&'a self, q: Query, key_prefix: Option<String>) -> StateFuture<'a, QueryResult> {
        Box::pin(async move {
            let (tail, params) = super::query::render(&q, &PgDialect, 2);
            let sql = format!(
                "SELECT key, value::text, isbinary, xmin::text FROM {} WHERE key LIKE $1 AND (expiredate IS NULL OR expiredate > now()){tail}",
                self.table
            );
            let like = like_prefix(key_prefix.as_deref());
            let owned: Vec<Box<dyn ToSql + Sync + Send>> = params
                .into_iter()
                .map(|p| -> Box<dyn ToSql + Sync + Send> {
                    match p {
                        Param::Path(segs) => Box::new(segs),
                        Param::Value(v) => Box::new(v),
                        Param::Int(i) => Box::new(i),
                        Param::Text(t) => Box::new(t),
                    }
                })
                .collect();
            let mut refs: Vec<&(dyn ToSql + Sync)> = vec![&like];
            refs.extend(owned.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)));
            let client = self.client().await?;
            let rows = client.query(sql.as_str(), &refs).await.map_err(pg_err)?;
            let items = rows
                .into_iter()
                .map(|row| {
                    Ok(QueryItem {
                        key: row.get(0),
                        data: decode(row.get(1), row.get(2))?,
                        etag: row.get(3),
                    })
                })
                .collect::<Result<Vec<_>, StateError>>()?;
            let token = super::query::next_token(&q, items.len());
            Ok(QueryResult { items, token })
        })
    }

    fn get<'a>(&'a self, req: GetRequest) -> StateFuture<'a, Option<StateValue>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT value::text, isbinary, xmin::text, (extract(epoch from expiredate) * 1000)::bigint
                         FROM {} WHERE key = $1 AND (expiredate IS NULL OR expiredate > now())",
                        self.table
                    ),
                    &[&req.key],
                )
                .await
                .map_err(pg_err)?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(StateValue {
                data: decode(row.get(0), row.get(1))?,
                etag: row.get(2),
                metadata: expiry_metadata(row.get(3)),
            }))
        })
    }

    fn set<'a>(&'a self, req: SetRequest) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            Self::write(&client, &self.table, &TransactionOp::Upsert(req)).await
        })
    }

    fn delete<'a>(&'a self, req: DeleteRequest) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            Self::write(&client, &self.table, &TransactionOp::Delete(req)).await
        })
    }

    fn transact<'a>(&'a self, ops: Vec<TransactionOp>) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_err)?;
            for op in &ops {
                Self::write(&tx, &self.table, op).await?;
            }
            tx.commit().await.map_err(pg_err)
            // An error above drops `tx`, which rolls back.
        })
    }
}
