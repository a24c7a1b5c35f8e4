//! `state.in-memory`: Dapr's reference semantics in a map. Transactions are
//! atomic under one lock; TTLs expire lazily on read. Process-local: it does
//! not survive a restart and is not shared between sidecars.

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

struct Entry {
    data: Bytes,
    etag: String,
    expires_at_ms: Option<i64>,
}

#[derive(Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<String, Entry>>,
}

impl MemoryStore {
    pub fn new(_metadata: &Metadata) -> Result<Self, String> {
        Ok(Self::default())
    }

    fn live<'m>(items: &'m mut HashMap<String, Entry>, key: &str, now: i64) -> Option<&'m Entry> {
        if items
            .get(key)
            .is_some_and(|e| e.expires_at_ms.is_some_and(|t| t <= now))
        {
            items.remove(key);
        }
        items.get(key)
    }

    fn apply_set(
        items: &mut HashMap<String, Entry>,
        req: &SetRequest,
        now: i64,
    ) -> Result<(), StateError> {
        let ttl = ttl(&req.metadata)?;
        let current = Self::live(items, &req.key, now).map(|e| e.etag.clone());
        check_write(
            &req.key,
            current.as_deref(),
            req.etag.as_deref(),
            req.concurrency,
        )?;
        items.insert(
            req.key.clone(),
            Entry {
                data: req.value.clone(),
                etag: new_etag(),
                expires_at_ms: ttl.map(|d| now + d.as_millis() as i64),
            },
        );
        Ok(())
    }

    fn apply_delete(
        items: &mut HashMap<String, Entry>,
        req: &DeleteRequest,
        now: i64,
    ) -> Result<(), StateError> {
        let current = Self::live(items, &req.key, now).map(|e| e.etag.clone());
        check_delete(&req.key, current.as_deref(), req.etag.as_deref())?;
        items.remove(&req.key);
        Ok(())
    }
}

impl StateStore for MemoryStore {
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
            let mut items = self.items.lock().expect("state lock not poisoned");
            Ok(
                Self::live(&mut items, &req.key, now_ms()).map(|e| StateValue {
                    data: e.data.clone(),
                    etag: e.etag.clone(),
                    metadata: expiry_metadata(e.expires_at_ms),
                }),
            )
        })
    }

    fn set<'a>(&'a self, req: SetRequest) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut items = self.items.lock().expect("state lock not poisoned");
            Self::apply_set(&mut items, &req, now_ms())
        })
    }

    fn delete<'a>(&'a self, req: DeleteRequest) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut items = self.items.lock().expect("state lock not poisoned");
            Self::apply_delete(&mut items, &req, now_ms())
        })
    }

    fn transact<'a>(&'a self, ops: Vec<TransactionOp>) -> StateFuture<'a, ()> {
        Box::pin(async move {
            let mut items = self.items.lock().expect("state lock not poisoned");
            let now = now_ms();
            // Work on a copy of the touched keys so a failure half-way leaves
            // the map as it was.
            let mut staged: HashMap<String, Entry> = HashMap::new();
            for op in &ops {
                let key = op.key();
                if !staged.contains_key(key)
                    && let Some(e) = Self::live(&mut items, key, now)
                {
                    staged.insert(
                        key.to_string(),
                        Entry {
                            data: e.data.clone(),
                            etag: e.etag.clone(),
                            expires_at_ms: e.expires_at_ms,
                        },
                    );
                }
            }
            let touched: std::collections::BTreeSet<String> =
                ops.iter().map(|o| o.key().to_string()).collect();
            for op in &ops {
                match op {
                    TransactionOp::Upsert(s) => Self::apply_set(&mut staged, s, now)?,
                    TransactionOp::Delete(d) => Self::apply_delete(&mut staged, d, now)?,
                }
            }
            for key in touched {
                match staged.remove(&key) {
                    Some(e) => {
                        items.insert(key, e);
                    }
                    None => {
                        items.remove(&key);
                    }
                }
            }
            Ok(())
        })
    }
}
