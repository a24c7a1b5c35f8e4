//! `state.redis`: one hash per key with fields `data` and `version`; the
//! version is the ETag. A conditional write (an ETag, first-write) is a Lua
//! script, so the check and the write are atomic on the server; a
//! transaction is one script that checks every operation before it applies
//! any; a plain save is a `MULTI` block. A read is `HMGET` and
//! `PTTL` in one pipeline (no script: a script's call costs the server
//! more than the two commands); a write between the two can only make the
//! reported expiry the newer item's. TTLs are native `EXPIRE`s.
//! The connection manager reconnects after Redis restarts.

use super::*;
use ::redis::aio::ConnectionManager;
use ::redis::{Script, Value};

/// KEYS: the keys of the operations, in order. ARGV per operation:
/// kind ("set" | "del"), etag ("" = none), first-write ("1" | "0"),
/// ttl seconds ("0" = none), data. Checks all, then applies all.
const WRITE: &str = r#"
local versions = {}
local function current(key)
  if versions[key] == nil then
    local v = redis.call("HGET", key, "version")
    if v then versions[key] = tonumber(v) else versions[key] = false end
  end
  return versions[key]
end
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 5
  local kind, etag, first = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local cur = current(key)
  if etag ~= "" then
    if not cur or tostring(cur) ~= etag then
      return redis.error_reply("ETAG_MISMATCH " .. key)
    end
  elseif kind == "set" and first == "1" and cur then
    return redis.error_reply("ETAG_MISMATCH " .. key)
  end
  if kind == "set" then versions[key] = (cur or 0) + 1 else versions[key] = false end
end
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 5
  local kind, ttl, data = ARGV[base + 1], tonumber(ARGV[base + 4]), ARGV[base + 5]
  if kind == "set" then
    redis.call("HINCRBY", key, "version", 1)
    redis.call("HSET", key, "data", data)
    if ttl > 0 then redis.call("EXPIRE", key, ttl) else redis.call("PERSIST", key) end
  else
    redis.call("DEL", key)
  end
end
return "OK"
"#;

pub struct RedisStore {
    conn: ConnectionManager,
    write: Script,
    /// Component `ttlInSeconds`: seconds for items saved without their own
    /// (0: none).
    default_ttl: u64,
}

fn err(e: ::redis::RedisError) -> StateError {
    let text = e.to_string();
    if text.contains("ETAG_MISMATCH") {
        StateError::EtagMismatch("the ETag does not match the stored item".into())
    } else {
        StateError::Store(format!("redis: {text}"))
    }
}

impl RedisStore {
    /// Connects at init, as Dapr does: a Redis that is down fails the
    /// component (fatal unless `ignoreErrors`).
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let conn = crate::components::metadata::redis_connection(metadata, "state.redis").await?;
        // Dapr's default TTL for items saved without their own.
        let default_ttl = match metadata.get("ttlInSeconds").filter(|v| !v.is_empty()) {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= -1)
                .ok_or_else(|| {
                    format!(
                        "metadata `ttlInSeconds` is `{v}`; expected whole seconds (-1 or 0: none)"
                    )
                })?
                .max(0) as u64,
        };
        Ok(Self {
            conn,
            write: Script::new(WRITE),
            default_ttl,
        })
    }

    /// The TTL in seconds to save `s` with (0: none): its own
    /// `ttlInSeconds` (-1: none), else the component's.
    fn ttl_of(&self, s: &SetRequest) -> Result<u64, StateError> {
        if s.metadata.contains_key("ttlInSeconds") {
            Ok(ttl(&s.metadata)?.map_or(0, |d| d.as_secs()))
        } else {
            Ok(self.default_ttl)
        }
    }

    /// A save with no condition (no ETag, last write wins) is a `MULTI`
    /// block in one round trip: the script's check is not needed, and
    /// running one costs the server more than the plain commands.
    async fn set_unconditional(&self, s: &SetRequest) -> Result<(), StateError> {
        let ttl = self.ttl_of(s)?;
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("HINCRBY")
            .arg(&s.key)
            .arg("version")
            .arg(1)
            .ignore()
            .cmd("HSET")
            .arg(&s.key)
            .arg("data")
            .arg(s.value.as_ref())
            .ignore();
        if ttl > 0 {
            pipe.cmd("EXPIRE").arg(&s.key).arg(ttl).ignore();
        } else {
            pipe.cmd("PERSIST").arg(&s.key).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(err)
    }

    async fn run_write(&self, ops: Vec<TransactionOp>) -> Result<(), StateError> {
        if let [TransactionOp::Upsert(s)] = ops.as_slice()
            && s.etag.as_deref().is_none_or(str::is_empty)
            && s.concurrency != Concurrency::FirstWrite
        {
            return self.set_unconditional(s).await;
        }
        let mut inv = self.write.prepare_invoke();
        for op in &ops {
            match op {
                TransactionOp::Upsert(s) => {
                    let etag = etag_arg(s.etag.as_deref())?;
                    let ttl = self.ttl_of(s)?;
                    inv.key(&s.key)
                        .arg("set")
                        .arg(etag)
                        .arg(if s.concurrency == Concurrency::FirstWrite {
                            "1"
                        } else {
                            "0"
                        })
                        .arg(ttl)
                        .arg(s.value.as_ref());
                }
                TransactionOp::Delete(d) => {
                    let etag = etag_arg(d.etag.as_deref())?;
                    inv.key(&d.key).arg("del").arg(etag).arg("0").arg(0).arg("");
                }
            }
        }
        let mut conn = self.conn.clone();
        inv.invoke_async::<Value>(&mut conn)
            .await
            .map(|_| ())
            .map_err(err)
    }
}

fn parse_err(e: impl std::fmt::Display) -> StateError {
    StateError::Store(format!("redis: unexpected reply: {e}"))
}

/// Redis ETags are version numbers; anything else can never match.
fn etag_arg(etag: Option<&str>) -> Result<String, StateError> {
    match etag.filter(|e| !e.is_empty()) {
        None => Ok(String::new()),
        Some(e) if e.parse::<u64>().is_ok() => Ok(e.to_string()),
        Some(e) => Err(StateError::InvalidEtag(format!(
            "`{e}` is not a Redis version number"
        ))),
    }
}

impl StateStore for RedisStore {
    fn features(&self) -> Vec<&'static str> {
        vec![
            feature::ETAG,
            feature::TRANSACTIONAL,
            feature::TTL,
            feature::ACTOR,
        ]
    }

    fn get<'a>(&'a self, req: GetRequest) -> StateFuture<'a, Option<StateValue>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (fields, pttl): (Vec<Option<Vec<u8>>>, i64) = ::redis::pipe()
                .cmd("HMGET")
                .arg(&req.key)
                .arg("data")
                .arg("version")
                .cmd("PTTL")
                .arg(&req.key)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            let mut fields = fields.into_iter();
            let (Some(Some(data)), version) = (fields.next(), fields.next().flatten()) else {
                return Ok(None);
            };
            let version = String::from_utf8(version.unwrap_or_default()).map_err(parse_err)?;
            Ok(Some(StateValue {
                data: Bytes::from(data),
                etag: version,
                metadata: expiry_metadata((pttl > 0).then(|| now_ms() + pttl)),
            }))
        })
    }

    fn set<'a>(&'a self, req: SetRequest) -> StateFuture<'a, ()> {
        Box::pin(self.run_write(vec![TransactionOp::Upsert(req)]))
    }

    fn delete<'a>(&'a self, req: DeleteRequest) -> StateFuture<'a, ()> {
        Box::pin(self.run_write(vec![TransactionOp::Delete(req)]))
    }

    fn transact<'a>(&'a self, ops: Vec<TransactionOp>) -> StateFuture<'a, ()> {
        Box::pin(self.run_write(ops))
    }
}
