//! `bindings.postgresql`: an output binding running SQL (metadata
//! `connectionString`). `exec` runs request metadata `sql` with `params`
//! (a JSON array for `$1`, `$2`, …) and answers metadata `rows-affected`;
//! `query` answers the rows as a JSON array of arrays, in column order;
//! `close` closes the pool's connections (new ones are made when next
//! needed). Parameters and columns of the common types (integers, floats,
//! booleans, text, JSON) convert by themselves; cast others in SQL
//! (`$1::timestamptz`, `created::text`).

use super::*;
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};

pub struct PostgresBinding {
    pool: Pool,
}

fn failed(e: impl std::fmt::Display) -> BindingError {
    BindingError::Failed(format!("postgresql: {e}"))
}

/// A SQL error the caller can fix (syntax, unknown table, a constraint)
/// is a bad request; a lost connection is a failure.
fn sql_error(e: tokio_postgres::Error) -> BindingError {
    match e.as_db_error() {
        Some(db) => BindingError::BadRequest(format!(
            "postgresql: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => failed(e),
    }
}

/// A JSON parameter as the statement's parameter type wants it.
fn param(v: &Value, ty: &Type, n: usize) -> Result<Box<dyn ToSql + Sync + Send>, BindingError> {
    let bad = || {
        BindingError::BadRequest(format!(
            "params[{n}] is {v}, which does not fit parameter ${} of type {ty}; cast it in SQL",
            n + 1
        ))
    };
    if v.is_null() {
        return Ok(Box::new(Option::<String>::None));
    }
    Ok(match *ty {
        Type::INT2 => Box::new(i16::try_from(v.as_i64().ok_or_else(bad)?).map_err(|_| bad())?),
        Type::INT4 => Box::new(i32::try_from(v.as_i64().ok_or_else(bad)?).map_err(|_| bad())?),
        Type::INT8 => Box::new(v.as_i64().ok_or_else(bad)?),
        Type::FLOAT4 => Box::new(v.as_f64().ok_or_else(bad)? as f32),
        Type::FLOAT8 => Box::new(v.as_f64().ok_or_else(bad)?),
        Type::BOOL => Box::new(v.as_bool().ok_or_else(bad)?),
        Type::JSON | Type::JSONB => Box::new(v.clone()),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            Box::new(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        }
        _ => return Err(bad()),
    })
}

/// One column of a row as JSON.
fn column(row: &tokio_postgres::Row, i: usize) -> Value {
    let ty = row.columns()[i].type_();
    let get = || -> Result<Value, tokio_postgres::Error> {
        Ok(match *ty {
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(Value::from)
                .unwrap_or(Value::Null),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(Value::from)
                .unwrap_or(Value::Null),
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)?
                .map(Value::from)
                .unwrap_or(Value::Null),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(Value::from)
                .unwrap_or(Value::Null),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)?
                .map(Value::from)
                .unwrap_or(Value::Null),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(Value::from)
                .unwrap_or(Value::Null),
            Type::JSON | Type::JSONB => row.try_get::<_, Option<Value>>(i)?.unwrap_or(Value::Null),
            _ => row
                .try_get::<_, Option<String>>(i)?
                .map(Value::from)
                .unwrap_or(Value::Null),
        })
    };
    get().unwrap_or_else(|_| Value::String(format!("(a {ty} value: cast it to text in SQL)")))
}

impl PostgresBinding {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        let pool = crate::components::metadata::postgres_pool(m)?;
        // Fail at init, as Dapr does, when the database cannot be reached.
        let _first = pool
            .get()
            .await
            .map_err(|e| format!("cannot connect to postgresql: {e}"))?;
        Ok(Self { pool })
    }

    async fn run(&self, req: OutputRequest) -> Result<OutputResponse, BindingError> {
        let op = req.operation.as_str();
        if op == "close" {
            // Idle connections go; the pool makes new ones when next asked.
            self.pool.retain(|_, _| false);
            return Ok(OutputResponse::default());
        }
        let sql = required(&req.metadata, "sql", op)?;
        let params: Vec<Value> = match req.metadata.get("params").filter(|p| !p.is_empty()) {
            None => Vec::new(),
            Some(p) => serde_json::from_str(p).map_err(|e| {
                BindingError::BadRequest(format!("metadata `params` must be a JSON array: {e}"))
            })?,
        };
        let client = self.pool.get().await.map_err(failed)?;
        let stmt = client.prepare(sql).await.map_err(sql_error)?;
        if stmt.params().len() != params.len() {
            return Err(BindingError::BadRequest(format!(
                "the SQL has {} parameters and `params` has {} values",
                stmt.params().len(),
                params.len()
            )));
        }
        let boxed = params
            .iter()
            .zip(stmt.params())
            .enumerate()
            .map(|(n, (v, ty))| param(v, ty, n))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&(dyn ToSql + Sync)> = boxed
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let started = crate::clock::now_ms();
        let mut out = OutputResponse::default();
        match op {
            "exec" => {
                let n = client.execute(&stmt, &refs).await.map_err(sql_error)?;
                out.metadata.insert("rows-affected".into(), n.to_string());
            }
            "query" => {
                let rows = client.query(&stmt, &refs).await.map_err(sql_error)?;
                let rows: Vec<Value> = rows
                    .iter()
                    .map(|r| Value::Array((0..r.len()).map(|i| column(r, i)).collect()))
                    .collect();
                out.data = Some(serde_json::to_vec(&rows).expect("JSON").into());
            }
            other => {
                return Err(unsupported(other));
            }
        }
        let ended = crate::clock::now_ms();
        out.metadata.insert("operation".into(), op.into());
        out.metadata.insert("sql".into(), sql.into());
        out.metadata
            .insert("start-time".into(), crate::clock::rfc3339_utc(started));
        out.metadata
            .insert("end-time".into(), crate::clock::rfc3339_utc(ended));
        out.metadata
            .insert("duration".into(), format!("{}ms", ended - started));
        Ok(out)
    }
}

impl Binding for PostgresBinding {
    fn operations(&self) -> Vec<&'static str> {
        vec!["exec", "query", "close"]
    }

    fn invoke<'a>(
        &'a self,
        req: OutputRequest,
    ) -> BoxFuture<'a, Result<OutputResponse, BindingError>> {
        Box::pin(self.run(req))
    }
}
