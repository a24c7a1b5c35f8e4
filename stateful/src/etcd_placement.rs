//! Actor placement in etcd: the same two records as the embedded table
//! (`placement::SqlitePlacement`), as keys under the engine's prefix.
//!
//! - `<prefix>/actors/<ns>/hosts/<host id>`: the host and the end of its
//!   lease (Unix ms, by its clock), rewritten at each heartbeat;
//! - `<prefix>/actors/<ns>/act/<type>||<id>`: the id of the host that
//!   holds the actor's activation.
//!
//! Taking an activation is a transaction that succeeds only if the
//! activation key is unchanged since it was read (absent, released, or
//! held by a host whose lease had lapsed when read), so of two hosts that
//! race for one actor exactly one wins. Leases are times in the records,
//! not etcd leases: the rule is the embedded table's, word for word, and
//! hosts' clocks are assumed close (NTP), as for the job engine.

use crate::engine::{EngineError, EngineFuture};
use crate::etcd::{Etcd, delete_op, get_op, key_part, prefix_end, put_op, unchanged_since};
use crate::placement::{Acquired, Host, Placement};
use serde::{Deserialize, Serialize};
use tandem_proto::etcd::{Compare, KeyValue, TxnRequest, compare, response_op};

/// Tries of a read-then-write that lost a race.
const RACES: usize = 8;

#[derive(Serialize, Deserialize)]
struct HostRecord {
    host: Host,
    lease_until: i64,
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("{what}: a placement record is unreadable: {e}"))
}

impl Etcd {
    fn hosts_prefix(&self, ns: &str) -> String {
        format!("{}/actors/{}/hosts/", self.prefix, key_part(ns))
    }

    fn host_key(&self, ns: &str, id: &str) -> Vec<u8> {
        format!("{}{}", self.hosts_prefix(ns), key_part(id)).into_bytes()
    }

    fn acts_prefix(&self, ns: &str) -> String {
        format!("{}/actors/{}/act/", self.prefix, key_part(ns))
    }

    fn act_key(&self, ns: &str, actor_type: &str, actor_id: &str) -> Vec<u8> {
        format!("{}{actor_type}||{actor_id}", self.acts_prefix(ns)).into_bytes()
    }

    fn host_record(&self, kv: &KeyValue) -> Result<HostRecord, EngineError> {
        serde_json::from_slice(&kv.value).map_err(|e| unreadable(&self.what, e))
    }

    /// Deletes the activations `holder` holds, each only if still its and
    /// only while `holder` has no host record (a host that came back keeps
    /// what it holds).
    async fn drop_activations(&self, ns: &str, holder: &str) -> Result<(), EngineError> {
        let host_key = self.host_key(ns, holder);
        let start = self.acts_prefix(ns).into_bytes();
        let end = prefix_end(&start);
        let held: Vec<KeyValue> = self
            .range_all("reading the activations", start, end, false)
            .await?
            .into_iter()
            .filter(|kv| kv.value == holder.as_bytes())
            .collect();
        for kv in held {
            self.txn(
                "releasing an activation",
                TxnRequest {
                    compare: vec![
                        unchanged_since(kv.key.clone(), kv.mod_revision),
                        Compare {
                            result: compare::CompareResult::Equal as i32,
                            target: compare::CompareTarget::Version as i32,
                            key: host_key.clone(),
                            target_union: Some(compare::TargetUnion::Version(0)),
                        },
                    ],
                    success: vec![delete_op(kv.key)],
                    failure: vec![],
                },
            )
            .await?;
        }
        Ok(())
    }

    /// A key's value as the one read of a transaction's results.
    fn read_at(r: &tandem_proto::etcd::TxnResponse, i: usize) -> Option<KeyValue> {
        match r.responses.get(i).and_then(|o| o.response.as_ref()) {
            Some(response_op::Response::ResponseRange(r)) => r.kvs.first().cloned(),
            _ => None,
        }
    }
}

impl Placement for Etcd {
    fn what(&self) -> &str {
        &self.what
    }

    fn heartbeat<'a>(
        &'a self,
        namespace: &'a str,
        me: &'a Host,
        now: i64,
        lease_ms: i64,
    ) -> EngineFuture<'a, Vec<Host>> {
        Box::pin(async move {
            let record = serde_json::to_vec(&HostRecord {
                host: me.clone(),
                lease_until: now + lease_ms,
            })
            .expect("a host serialises");
            let start = self.hosts_prefix(namespace).into_bytes();
            let end = prefix_end(&start);
            let r = self
                .txn(
                    "renewing this host's placement lease",
                    TxnRequest {
                        compare: vec![],
                        success: vec![
                            put_op(self.host_key(namespace, &me.id), record),
                            tandem_proto::etcd::RequestOp {
                                request: Some(
                                    tandem_proto::etcd::request_op::Request::RequestRange(
                                        tandem_proto::etcd::RangeRequest {
                                            key: start,
                                            range_end: end,
                                            ..Default::default()
                                        },
                                    ),
                                ),
                            },
                        ],
                        failure: vec![],
                    },
                )
                .await?;
            let kvs = match r.responses.get(1).and_then(|o| o.response.as_ref()) {
                Some(response_op::Response::ResponseRange(r)) => r.kvs.clone(),
                _ => Vec::new(),
            };
            let mut live = Vec::new();
            for kv in kvs {
                let h = self.host_record(&kv)?;
                if h.lease_until > now {
                    live.push(h.host);
                }
            }
            live.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(live)
        })
    }

    fn sweep<'a>(&'a self, namespace: &'a str, now: i64, lease_ms: i64) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let start = self.hosts_prefix(namespace).into_bytes();
            let end = prefix_end(&start);
            for kv in self
                .range_all("reading the hosts", start, end, false)
                .await?
            {
                let h = self.host_record(&kv)?;
                if h.lease_until >= now - lease_ms {
                    continue;
                }
                // Gone for a whole lease more: whoever wins the delete
                // drops its activations too.
                let gone = self
                    .txn(
                        "forgetting a host that is gone",
                        TxnRequest {
                            compare: vec![unchanged_since(kv.key.clone(), kv.mod_revision)],
                            success: vec![delete_op(kv.key.clone())],
                            failure: vec![],
                        },
                    )
                    .await?;
                if gone.succeeded {
                    self.drop_activations(namespace, &h.host.id).await?;
                }
            }
            Ok(())
        })
    }

    fn leave<'a>(&'a self, namespace: &'a str, me: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            self.txn(
                "leaving the placement table",
                TxnRequest {
                    compare: vec![],
                    success: vec![delete_op(self.host_key(namespace, me))],
                    failure: vec![],
                },
            )
            .await?;
            self.drop_activations(namespace, me).await
        })
    }

    fn acquire<'a>(
        &'a self,
        namespace: &'a str,
        actor_type: &'a str,
        actor_id: &'a str,
        me: &'a str,
        now: i64,
    ) -> EngineFuture<'a, Acquired> {
        Box::pin(async move {
            let act = self.act_key(namespace, actor_type, actor_id);
            let mine = self.host_key(namespace, me);
            for _ in 0..RACES {
                let r = self
                    .txn(
                        "reading an activation",
                        TxnRequest {
                            compare: vec![],
                            success: vec![get_op(mine.clone()), get_op(act.clone())],
                            failure: vec![],
                        },
                    )
                    .await?;
                match Self::read_at(&r, 0) {
                    Some(kv) if self.host_record(&kv)?.lease_until > now => {}
                    _ => {
                        return Err(EngineError::Unavailable(format!(
                            "{}: this sidecar's placement lease has lapsed (it is renewing it)",
                            self.what
                        )));
                    }
                }
                let current = Self::read_at(&r, 1);
                let revision = current.as_ref().map_or(0, |kv| kv.mod_revision);
                if let Some(kv) = &current {
                    if kv.value == me.as_bytes() {
                        return Ok(Acquired::Mine);
                    }
                    let holder = String::from_utf8_lossy(&kv.value).to_string();
                    let h = self
                        .txn(
                            "reading an activation's host",
                            TxnRequest {
                                compare: vec![],
                                success: vec![get_op(self.host_key(namespace, &holder))],
                                failure: vec![],
                            },
                        )
                        .await?;
                    if let Some(hk) = Self::read_at(&h, 0) {
                        let rec = self.host_record(&hk)?;
                        if rec.lease_until > now {
                            return Ok(Acquired::Held(rec.host));
                        }
                    }
                }
                // Free (never taken, released, or its host's lease lapsed):
                // take it unless someone changed it since it was read.
                let w = self
                    .txn(
                        "taking an activation",
                        TxnRequest {
                            compare: vec![
                                unchanged_since(act.clone(), revision),
                                Compare {
                                    result: compare::CompareResult::Greater as i32,
                                    target: compare::CompareTarget::Mod as i32,
                                    key: mine.clone(),
                                    target_union: Some(compare::TargetUnion::ModRevision(0)),
                                },
                            ],
                            success: vec![put_op(act.clone(), me.as_bytes().to_vec())],
                            failure: vec![],
                        },
                    )
                    .await?;
                if w.succeeded {
                    return Ok(Acquired::Mine);
                }
            }
            Err(EngineError::Unavailable(format!(
                "{}: the activation of {actor_type}/{actor_id} kept changing while it was being taken; try again",
                self.what
            )))
        })
    }

    fn release<'a>(
        &'a self,
        namespace: &'a str,
        actor_type: &'a str,
        actor_id: &'a str,
        me: &'a str,
    ) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let act = self.act_key(namespace, actor_type, actor_id);
            self.txn(
                "releasing an activation",
                TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Value as i32,
                        key: act.clone(),
                        target_union: Some(compare::TargetUnion::Value(me.as_bytes().to_vec())),
                    }],
                    success: vec![delete_op(act)],
                    failure: vec![],
                },
            )
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::EtcdOptions;
    use crate::etcd_cluster::Cluster;
    use std::sync::Arc;
    use std::time::Duration;

    fn engine(endpoints: Vec<String>, prefix: &str) -> Etcd {
        Etcd::new(&EtcdOptions {
            endpoints,
            prefix: format!("{prefix}-{}", std::process::id()),
            timeout: Duration::from_secs(2),
        })
        .unwrap()
    }

    /// The embedded table's rules, on a three-member cluster, through two
    /// handles that ask members in different orders.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn placement_in_etcd_keeps_the_embedded_tables_rules() {
        let cluster = Cluster::start(3);
        let a = engine(cluster.endpoints(), "rules");
        let mut other = cluster.endpoints();
        other.reverse();
        let b = engine(other, "rules");
        crate::placement::tests::one_holder_per_actor(&a, &b).await;
        let racers: Vec<Arc<dyn Placement>> = (0..4)
            .map(|_| Arc::new(engine(cluster.endpoints(), "race")) as Arc<dyn Placement>)
            .collect();
        crate::placement::tests::racing_hosts_never_both_win(racers).await;
    }
}
