//! `bindings.redis`: an output binding on Redis keys (Dapr's Redis
//! metadata: `redisHost`, `redisDB`, `redisUsername`, `redisPassword`).
//! `create` sets metadata `key` to the data (`ttlInSeconds` expires it),
//! `get` answers its value (nothing when absent), `delete` removes it,
//! `increment` adds one to it (`ttlInSeconds` as for create).

use super::*;
use ::redis::AsyncCommands;
use ::redis::aio::ConnectionManager;

pub struct RedisBinding {
    conn: ConnectionManager,
}

fn failed(e: ::redis::RedisError) -> BindingError {
    BindingError::Failed(format!("redis: {e}"))
}

impl RedisBinding {
    pub async fn connect(m: &Metadata) -> Result<Self, String> {
        Ok(Self {
            conn: crate::components::metadata::redis_connection(m, "bindings.redis").await?,
        })
    }

    async fn run(&self, req: OutputRequest) -> Result<OutputResponse, BindingError> {
        let op = req.operation.as_str();
        let key = required(&req.metadata, "key", op)?;
        let ttl = ttl_seconds(&req.metadata)?;
        let mut conn = self.conn.clone();
        let mut out = OutputResponse::default();
        match op {
            "create" => {
                let () = match ttl {
                    Some(t) if t > 0 => conn.set_ex(key, req.data.as_ref(), t).await,
                    _ => conn.set(key, req.data.as_ref()).await,
                }
                .map_err(failed)?;
            }
            "get" => {
                let v: Option<Vec<u8>> = conn.get(key).await.map_err(failed)?;
                out.data = v.map(Bytes::from);
            }
            "delete" => {
                let _: i64 = conn.del(key).await.map_err(failed)?;
            }
            "increment" => {
                let n: i64 = conn.incr(key, 1).await.map_err(|e| {
                    BindingError::BadRequest(format!(
                        "redis: key `{key}` cannot be incremented: {e}"
                    ))
                })?;
                if let Some(t) = ttl.filter(|t| *t > 0) {
                    let _: bool = conn.expire(key, t as i64).await.map_err(failed)?;
                }
                out.data = Some(Bytes::from(n.to_string()));
            }
            other => {
                return Err(unsupported(other));
            }
        }
        Ok(out)
    }
}

impl Binding for RedisBinding {
    fn operations(&self) -> Vec<&'static str> {
        vec!["create", "get", "delete", "increment"]
    }

    fn invoke<'a>(
        &'a self,
        req: OutputRequest,
    ) -> BoxFuture<'a, Result<OutputResponse, BindingError>> {
        Box::pin(self.run(req))
    }
}
