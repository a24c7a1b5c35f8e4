//! The etcd engine: jobs in an etcd cluster, for sidecars on many hosts.
//!
//! Two keys a job, always changed together in one transaction:
//! - `<prefix>/jobs/<ns>/<app>/<name>` holds the record (the job, its next
//!   fire time, progress, and the lease when a sidecar holds it);
//! - `<prefix>/due/<ns>/<app>/<at:020>/<next:020>/<name>` indexes it by the
//!   time it is next free to claim (`at`: its fire time, or the end of its
//!   lease while it is held), then by its fire time. A range read up to
//!   "now" finds the due jobs, earliest first, and a lapsed lease makes its
//!   job due again without anyone cleaning up.
//!
//! A claim is a transaction that succeeds only if the record's
//! `mod_revision` is still the one read; the revision it writes is the
//! claim's token, and a settle succeeds only against it. So one sidecar
//! holds a tick at a time, a sidecar that died holding one loses it when
//! the lease ends, and a job replaced or deleted meanwhile is never
//! touched by an old claim.
//!
//! Requests go to one member; when it cannot answer (down, no leader, no
//! answer in time) the next is tried, and the one that answered is used
//! from then on. A request retried after a timeout may have been applied:
//! its compare then fails and the tick fires again later (at least once).

use crate::engine::{Claim, Engine, EngineError, EngineFuture, Owner, Settle};
use crate::job::Job;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tandem_proto::etcd::{
    Compare, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest, RequestOp, TxnRequest,
    TxnResponse, compare, kv_client::KvClient, request_op, response_op,
};
use tonic::transport::{Channel, Endpoint};

/// How an etcd engine is reached.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `host:port` or `http://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Every key starts with `<prefix>/`.
    pub prefix: String,
    /// How long one member has to answer before the next is asked.
    pub timeout: Duration,
}

pub struct Etcd {
    members: Vec<(String, KvClient<Channel>)>,
    /// The member asked first: the last one that answered.
    current: AtomicUsize,
    pub(crate) prefix: String,
    timeout: Duration,
    pub(crate) what: String,
    /// The records this handle's claims wrote, by job and token: a settle
    /// writes from them without reading the job first.
    claimed: Mutex<HashMap<(String, u64), Record>>,
}

/// What became of a guarded write.
enum Swapped {
    /// Written at this revision.
    Done(i64),
    /// Changed meanwhile: the record as it is now (`None`: gone).
    Lost(Option<Box<(Record, i64)>>),
}

/// Keys read per range request (and per batched read).
const PAGE: usize = 500;
/// Whole records read per range request: a record holds at most 256 KiB
/// of data (base64 in JSON, about 350 KiB), so a page stays well under the
/// 64 MiB an answer may be.
const RECORD_PAGE: usize = 100;
/// Claims remembered for settling before those whose leases ended go.
const CLAIMED_KEPT: usize = 1024;
/// Tries of a read-then-write that lost a race.
const RACES: usize = 8;

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    job: Job,
    next: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
    #[serde(default)]
    ticks: u32,
    #[serde(default)]
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder: Option<String>,
    #[serde(default)]
    lease_until: i64,
}

impl Record {
    /// When the job is next free to claim: where its due key sits.
    fn slot(&self) -> i64 {
        if self.holder.is_some() {
            self.lease_until
        } else {
            self.next
        }
    }
}

/// An owner's part of a key: `/` and `%` in the namespace or app id are
/// escaped so one owner's keys never fall inside another's range.
fn owner_part(o: &Owner) -> String {
    format!("{}/{}", key_part(&o.namespace), key_part(&o.app_id))
}

/// One part of a key with `/` and `%` escaped: it cannot reach into
/// another part's range.
pub(crate) fn key_part(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// The first key after every key that starts with `key` (etcd's prefix
/// range end).
pub(crate) fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

pub(crate) fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

pub(crate) fn delete_op(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

pub(crate) fn get_op(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

/// The key was last changed at `revision` (0: the key does not exist).
pub(crate) fn unchanged_since(key: Vec<u8>, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key,
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
    }
}

/// Whether the next member may answer where this one could not.
fn try_another(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}

impl Etcd {
    /// An engine on the etcd members at `options.endpoints` (connected on
    /// first use, so a cluster that is down now is no error here).
    pub fn new(options: &EtcdOptions) -> Result<Self, String> {
        if options.endpoints.is_empty() {
            return Err("no etcd endpoints given".into());
        }
        let mut members = Vec::new();
        for e in &options.endpoints {
            let e = e.trim();
            if e.starts_with("https://") || e.starts_with("unixs://") {
                return Err(format!(
                    "etcd endpoint {e}: TLS to etcd is not supported yet; use http:// on a private network"
                ));
            }
            let uri = if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            };
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|err| format!("etcd endpoint {e:?} is not a URL: {err}"))?
                .connect_timeout(options.timeout.min(Duration::from_secs(2)))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(options.timeout);
            let client = KvClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(8 << 20);
            members.push((uri, client));
        }
        let prefix = options.prefix.trim_end_matches('/').to_string();
        Ok(Self {
            what: format!(
                "etcd {}",
                members
                    .iter()
                    .map(|(u, _)| u.trim_start_matches("http://"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            members,
            current: AtomicUsize::new(0),
            prefix,
            timeout: options.timeout,
            claimed: Mutex::new(HashMap::new()),
        })
    }

    /// Which engine, for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// One request, to the member that answered last, then to the others.
    pub(crate) async fn call<T, F, Fut>(&self, doing: &str, f: F) -> Result<T, EngineError>
    where
        F: Fn(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.members.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut why = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            let (uri, client) = &self.members[at];
            let member = uri.trim_start_matches("http://");
            match tokio::time::timeout(self.timeout, f(client.clone())).await {
                Ok(Ok(r)) => {
                    if i > 0 {
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(r.into_inner());
                }
                Ok(Err(s)) if try_another(&s) => why.push(format!("{member}: {}", s.message())),
                Ok(Err(s)) => {
                    return Err(EngineError::Unavailable(format!(
                        "{}: {doing}: {}",
                        self.what,
                        s.message()
                    )));
                }
                Err(_) => why.push(format!(
                    "{member}: no answer within {} ms",
                    self.timeout.as_millis()
                )),
            }
        }
        Err(EngineError::Unavailable(format!(
            "{}: {doing}: no member answered ({})",
            self.what,
            why.join("; ")
        )))
    }

    pub(crate) async fn txn(
        &self,
        doing: &str,
        req: TxnRequest,
    ) -> Result<TxnResponse, EngineError> {
        self.call(doing, |mut c| {
            let req = req.clone();
            async move { c.txn(req).await }
        })
        .await
    }

    /// Every key in `[key, end)`, page by page.
    pub(crate) async fn range_all(
        &self,
        doing: &str,
        key: Vec<u8>,
        end: Vec<u8>,
        keys_only: bool,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let mut out = Vec::new();
        let mut from = key;
        loop {
            let req = RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: if keys_only { PAGE } else { RECORD_PAGE } as i64,
                keys_only,
                ..Default::default()
            };
            let page = self
                .call(doing, |mut c| {
                    let req = req.clone();
                    async move { c.range(req).await }
                })
                .await?;
            let more = page.more;
            if let Some(last) = page.kvs.last() {
                from = last.key.clone();
                from.push(0);
            }
            out.extend(page.kvs);
            if !more {
                return Ok(out);
            }
        }
    }

    fn owner_prefix(&self, kind: &str, owner: &Owner) -> String {
        format!("{}/{kind}/{}/", self.prefix, owner_part(owner))
    }

    fn job_key(&self, owner: &Owner, name: &str) -> Vec<u8> {
        format!("{}{name}", self.owner_prefix("jobs", owner)).into_bytes()
    }

    /// Where `r` sits in the due index.
    fn due_key(&self, owner: &Owner, r: &Record, name: &str) -> Vec<u8> {
        format!(
            "{}{:020}/{:020}/{name}",
            self.owner_prefix("due", owner),
            r.slot().max(0),
            r.next.max(0)
        )
        .into_bytes()
    }

    /// The record of `name` and the revision it was last written at.
    async fn read(&self, owner: &Owner, name: &str) -> Result<Option<(Record, i64)>, EngineError> {
        let req = RangeRequest {
            key: self.job_key(owner, name),
            ..Default::default()
        };
        let got = self
            .call("reading a job", |mut c| {
                let req = req.clone();
                async move { c.range(req).await }
            })
            .await?;
        match got.kvs.into_iter().next() {
            Some(kv) => Ok(Some((decode(&kv.value)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// The writes that replace `old` (at its slot) by `new` (or delete the
    /// job for `None`).
    fn rewrite(
        &self,
        owner: &Owner,
        name: &str,
        old: Option<&Record>,
        new: Option<&Record>,
    ) -> Vec<RequestOp> {
        let mut ops = Vec::with_capacity(3);
        let old_due = old.map(|r| self.due_key(owner, r, name));
        let new_due = new.map(|r| self.due_key(owner, r, name));
        match new {
            Some(r) => {
                // A transaction may not name one key twice.
                if let Some(d) = old_due.filter(|d| Some(d) != new_due.as_ref()) {
                    ops.push(delete_op(d));
                }
                ops.push(put_op(self.job_key(owner, name), encode(r)));
                if let Some(d) = new_due {
                    ops.push(put_op(d, Vec::new()));
                }
            }
            None => {
                ops.push(delete_op(self.job_key(owner, name)));
                if let Some(d) = old_due {
                    ops.push(delete_op(d));
                }
            }
        }
        ops
    }

    /// Replaces `old` (written at its revision; `None`: no job) by `new`
    /// (`None`: deleted) if nobody changed it meanwhile, in one round trip:
    /// when somebody did, the answer carries the record as it is now.
    async fn swap(
        &self,
        doing: &str,
        owner: &Owner,
        name: &str,
        old: Option<(&Record, i64)>,
        new: Option<&Record>,
    ) -> Result<Swapped, EngineError> {
        let revision = old.map(|(_, r)| r).unwrap_or(0);
        let key = self.job_key(owner, name);
        let req = TxnRequest {
            compare: vec![unchanged_since(key.clone(), revision)],
            success: self.rewrite(owner, name, old.map(|(r, _)| r), new),
            failure: vec![get_op(key)],
        };
        let done = self.txn(doing, req).await?;
        if done.succeeded {
            return Ok(Swapped::Done(done.header.map(|h| h.revision).unwrap_or(0)));
        }
        let now = match done.responses.into_iter().next().and_then(|r| r.response) {
            Some(response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
            _ => None,
        };
        Ok(Swapped::Lost(match now {
            Some(kv) => Some(Box::new((decode(&kv.value)?, kv.mod_revision))),
            None => None,
        }))
    }

    /// Deletes `name` if it exists; answers whether it did.
    async fn remove(&self, owner: &Owner, name: &str) -> Result<bool, EngineError> {
        let mut now = self.read(owner, name).await?;
        for _ in 0..RACES {
            let Some((old, rev)) = now else {
                return Ok(false);
            };
            match self
                .swap("deleting a job", owner, name, Some((&old, rev)), None)
                .await?
            {
                Swapped::Done(_) => return Ok(true),
                Swapped::Lost(current) => now = current.map(|b| *b),
            }
        }
        Err(self.busy("deleting a job"))
    }

    fn busy(&self, doing: &str) -> EngineError {
        EngineError::Unavailable(format!(
            "{}: {doing}: the job kept changing under this sidecar ({RACES} tries)",
            self.what
        ))
    }

    /// Reads the records at `keys` (batched), in order; `None` where gone
    /// or unreadable (a record this build cannot decode is logged and
    /// passed over, not allowed to fail every claim).
    async fn read_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<(Record, i64)>>, EngineError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(RECORD_PAGE) {
            let req = TxnRequest {
                compare: Vec::new(),
                success: chunk.iter().map(|k| get_op(k.clone())).collect(),
                failure: Vec::new(),
            };
            let got = self.txn("reading due jobs", req).await?;
            for r in got.responses {
                let kv = match r.response {
                    Some(response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
                    _ => None,
                };
                out.push(match kv {
                    Some(kv) => match decode(&kv.value) {
                        Ok(r) => Some((r, kv.mod_revision)),
                        Err(e) => {
                            tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "jobs: skipping a stored job");
                            None
                        }
                    },
                    None => None,
                });
            }
        }
        Ok(out)
    }

    /// Claims one due job: its record moves to `holder` until `until`.
    async fn claim_one(
        &self,
        owner: &Owner,
        name: &str,
        due_key: &[u8],
        found: Option<(Record, i64)>,
        lease: &Lease<'_>,
    ) -> Result<Option<Claim>, EngineError> {
        let Some((old, rev)) = found else {
            // A due key without its job (never written so; kept clean).
            // An unreadable job is left alone: the compare needs no job.
            let req = TxnRequest {
                compare: vec![unchanged_since(self.job_key(owner, name), 0)],
                success: vec![delete_op(due_key.to_vec())],
                failure: Vec::new(),
            };
            self.txn("removing a stray due key", req).await?;
            return Ok(None);
        };
        if self.due_key(owner, &old, name) != due_key {
            // Moved on since the due keys were read, or a key no write of
            // this engine leaves (removed so it cannot fill every claim).
            if old.slot() <= lease.now {
                let req = TxnRequest {
                    compare: vec![unchanged_since(self.job_key(owner, name), rev)],
                    success: vec![delete_op(due_key.to_vec())],
                    failure: Vec::new(),
                };
                self.txn("removing a stray due key", req).await?;
            }
            return Ok(None);
        }
        let mut new = old.clone();
        new.holder = Some(lease.holder.to_string());
        new.lease_until = lease.until;
        let token = match self
            .swap(
                "claiming a due job",
                owner,
                name,
                Some((&old, rev)),
                Some(&new),
            )
            .await?
        {
            Swapped::Done(token) => token,
            // Our own claim, applied by a member that died before it
            // answered (the call was sent again to another): the record is
            // as this call wrote it — holder and lease end are this call's
            // own. Its revision is the claim's token. Without this the tick
            // would wait out the lease before anyone fired it.
            Swapped::Lost(Some(now)) if now.0 == new => now.1,
            Swapped::Lost(_) => return Ok(None),
        };
        {
            let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
            // Claims never settled here (the sidecar gave up on them, or
            // another settled them) go once their leases end.
            if claimed.len() >= CLAIMED_KEPT {
                claimed.retain(|_, r| r.lease_until > lease.now);
            }
            claimed.insert((name.to_string(), token as u64), new);
        }
        Ok(Some(Claim {
            job: old.job,
            due: old.next,
            expires: old.expires,
            ticks: old.ticks,
            attempts: old.attempts,
            token: token as u64,
            lease_until: lease.until,
        }))
    }
}

/// Who claims, when, and until when.
struct Lease<'a> {
    holder: &'a str,
    now: i64,
    until: i64,
}

fn encode(r: &Record) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Result<Record, EngineError> {
    serde_json::from_slice(bytes)
        .map_err(|e| EngineError::Unavailable(format!("a stored job is unreadable: {e}")))
}

impl Engine for Etcd {
    fn put<'a>(
        &'a self,
        owner: &'a Owner,
        job: &'a Job,
        first: i64,
        expires: Option<i64>,
        overwrite: bool,
    ) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let new = Record {
                job: job.clone(),
                next: first,
                expires,
                ticks: 0,
                attempts: 0,
                holder: None,
                lease_until: 0,
            };
            // Tried as a new job first: one round trip when it is, and
            // the job as it is otherwise.
            let mut old: Option<(Record, i64)> = None;
            for _ in 0..RACES {
                if let Some((o, _)) = &old
                    && !overwrite
                {
                    // The same job put twice (a retried request that was
                    // applied) is no conflict.
                    if o.job == new.job
                        && o.next == new.next
                        && o.expires == new.expires
                        && o.ticks == 0
                        && o.holder.is_none()
                    {
                        return Ok(());
                    }
                    return Err(EngineError::Exists(format!(
                        "{}||{}",
                        owner.key(),
                        job.name
                    )));
                }
                let was = old.as_ref().map(|(r, rev)| (r, *rev));
                match self
                    .swap("storing a job", owner, &job.name, was, Some(&new))
                    .await?
                {
                    Swapped::Done(_) => return Ok(()),
                    Swapped::Lost(now) => old = now.map(|b| *b),
                }
            }
            Err(self.busy("storing a job"))
        })
    }

    fn get<'a>(&'a self, owner: &'a Owner, name: &'a str) -> EngineFuture<'a, Option<Job>> {
        Box::pin(async move { Ok(self.read(owner, name).await?.map(|(r, _)| r.job)) })
    }

    fn delete<'a>(&'a self, owner: &'a Owner, name: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move { self.remove(owner, name).await.map(|_| ()) })
    }

    fn delete_prefix<'a>(&'a self, owner: &'a Owner, prefix: &'a str) -> EngineFuture<'a, u64> {
        Box::pin(async move {
            let from = self.job_key(owner, prefix);
            let end = prefix_end(&from);
            let base = self.owner_prefix("jobs", owner).len();
            let found = self
                .range_all("listing jobs to delete", from, end, true)
                .await?;
            let mut gone = 0;
            for chunk in found.chunks(PAGE) {
                let done = join_all(chunk.iter().map(|kv| {
                    let name = String::from_utf8_lossy(&kv.key[base..]).into_owned();
                    async move { self.remove(owner, &name).await }
                }))
                .await;
                for d in done {
                    gone += u64::from(d?);
                }
            }
            Ok(gone)
        })
    }

    fn list<'a>(&'a self, owner: &'a Owner) -> EngineFuture<'a, Vec<Job>> {
        Box::pin(async move {
            let from = self.owner_prefix("jobs", owner).into_bytes();
            let end = prefix_end(&from);
            self.range_all("listing jobs", from, end, false)
                .await?
                .iter()
                .map(|kv| decode(&kv.value).map(|r| r.job))
                .collect()
        })
    }

    fn claim<'a>(
        &'a self,
        owner: &'a Owner,
        holder: &'a str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> EngineFuture<'a, Vec<Claim>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let base = self.owner_prefix("due", owner);
            let req = RangeRequest {
                key: base.clone().into_bytes(),
                // Up to and with `now`: the first key after it starts
                // with now + 1.
                range_end: format!("{base}{:020}/", now.saturating_add(1).max(0)).into_bytes(),
                limit: limit as i64,
                keys_only: true,
                ..Default::default()
            };
            let due = self
                .call("finding due jobs", |mut c| {
                    let req = req.clone();
                    async move { c.range(req).await }
                })
                .await?;
            let due: Vec<(&[u8], String)> = due
                .kvs
                .iter()
                .filter_map(|kv| {
                    let rest = std::str::from_utf8(kv.key.get(base.len()..)?).ok()?;
                    let name = rest.splitn(3, '/').nth(2)?;
                    Some((kv.key.as_slice(), name.to_string()))
                })
                .collect();
            let keys: Vec<Vec<u8>> = due.iter().map(|(_, n)| self.job_key(owner, n)).collect();
            let found = self.read_many(&keys).await?;
            let lease = Lease {
                holder,
                now,
                until: now.saturating_add(lease_ms),
            };
            let claimed = join_all(
                due.iter()
                    .zip(found)
                    .map(|((key, name), found)| self.claim_one(owner, name, key, found, &lease)),
            )
            .await;
            // One job's failure does not undo the others' claims (their
            // leases are written): they are handed out, the failure logged;
            // only when nothing was claimed is it the caller's error.
            let mut out = Vec::with_capacity(claimed.len());
            let mut failure = None;
            for c in claimed {
                match c {
                    Ok(Some(c)) => out.push(c),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, app_id = %owner.app_id, "jobs: cannot claim a due job");
                        failure.get_or_insert(e);
                    }
                }
            }
            match failure {
                Some(e) if out.is_empty() => Err(e),
                _ => Ok(out),
            }
        })
    }

    fn settle<'a>(
        &'a self,
        owner: &'a Owner,
        name: &'a str,
        token: u64,
        outcome: Settle,
    ) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            // The record this handle's claim wrote; read only when another
            // handle claimed it.
            let mine = self
                .claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(name.to_string(), token));
            let (old, rev) = match mine {
                Some(r) => (r, token as i64),
                None => match self.read(owner, name).await? {
                    Some(found) => found,
                    None => return Ok(()),
                },
            };
            if u64::try_from(rev).ok() != Some(token) {
                // Replaced, deleted and made again, or claimed by another
                // since: not this claim's to settle.
                return Ok(());
            }
            let new = match outcome {
                Settle::Next { next: None, .. } => None,
                Settle::Next {
                    next: Some(at),
                    ticks,
                } => Some(Record {
                    next: at,
                    ticks,
                    attempts: 0,
                    holder: None,
                    lease_until: 0,
                    ..old.clone()
                }),
                Settle::Retry { at, attempts } => Some(Record {
                    next: at,
                    attempts,
                    holder: None,
                    lease_until: 0,
                    ..old.clone()
                }),
            };
            // Lost to a change meanwhile: that change stands.
            self.swap(
                "recording a trigger",
                owner,
                name,
                Some((&old, rev)),
                new.as_ref(),
            )
            .await?;
            Ok(())
        })
    }

    fn settle_many<'a>(
        &'a self,
        owner: &'a Owner,
        settles: Vec<(String, u64, Settle)>,
    ) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let done = join_all(
                settles
                    .into_iter()
                    .map(|(name, token, outcome)| async move {
                        self.settle(owner, &name, token, outcome).await
                    }),
            )
            .await;
            done.into_iter().collect()
        })
    }

    fn next_due<'a>(&'a self, owner: &'a Owner) -> EngineFuture<'a, Option<i64>> {
        Box::pin(async move {
            let base = self.owner_prefix("due", owner);
            let req = RangeRequest {
                key: base.clone().into_bytes(),
                range_end: prefix_end(base.as_bytes()),
                limit: 1,
                keys_only: true,
                ..Default::default()
            };
            let got = self
                .call("finding the next due job", |mut c| {
                    let req = req.clone();
                    async move { c.range(req).await }
                })
                .await?;
            Ok(got.kvs.first().and_then(|kv| {
                let rest = std::str::from_utf8(kv.key.get(base.len()..)?).ok()?;
                rest.split_once('/')?.0.parse().ok()
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_owner_never_fall_in_anothers_range() {
        let o = |ns: &str, app: &str| Owner {
            namespace: ns.into(),
            app_id: app.into(),
        };
        assert_eq!(owner_part(&o("default", "a/b")), "default/a%2Fb");
        assert_eq!(owner_part(&o("default", "a%2Fb")), "default/a%252Fb");
        assert_ne!(owner_part(&o("x/y", "z")), owner_part(&o("x", "y/z")));
        assert_eq!(prefix_end(b"abc/"), b"abc0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[tokio::test]
    async fn endpoints_are_checked_when_the_engine_is_made() {
        let opts = |e: &[&str]| EtcdOptions {
            endpoints: e.iter().map(|s| s.to_string()).collect(),
            prefix: "tandem".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(Etcd::new(&opts(&[])).is_err());
        let e = Etcd::new(&opts(&["https://10.0.0.1:2379"])).err().unwrap();
        assert!(e.contains("TLS"), "{e}");
        let e = Etcd::new(&opts(&["not a url"])).err().unwrap();
        assert!(e.contains("not a URL"), "{e}");
    }

    use crate::etcd_cluster::Cluster;
    use crate::scheduler::{Deliver, Scheduler, now_ms};
    use futures_util::future::BoxFuture;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    fn engine(endpoints: Vec<String>) -> Etcd {
        Etcd::new(&EtcdOptions {
            endpoints,
            prefix: format!("tandem-test-{}", std::process::id()),
            timeout: Duration::from_secs(2),
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_sidecars_on_a_three_member_cluster_pass_the_conformance_suite() {
        let cluster = Cluster::start(3);
        let a = engine(cluster.endpoints());
        let mut other = cluster.endpoints();
        other.reverse();
        let b = engine(other);
        crate::conformance::run(&a, &b).await;
    }

    /// The app: counts each (job, due) it was given.
    #[derive(Default)]
    struct App(Mutex<HashMap<(String, i64), u32>>);

    impl Deliver for Arc<App> {
        fn deliver(&self, job: Job, due: i64) -> BoxFuture<'static, Result<(), String>> {
            let app = self.clone();
            Box::pin(async move {
                *app.0.lock().unwrap().entry((job.name, due)).or_default() += 1;
                Ok(())
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_killed_and_restarted_while_jobs_fire_loses_and_doubles_nothing() {
        let mut cluster = Cluster::start(3);
        let owner = Owner {
            namespace: "default".into(),
            app_id: "killed-member".into(),
        };
        let a: Arc<dyn Engine> = Arc::new(engine(cluster.endpoints()));
        let mut other = cluster.endpoints();
        other.rotate_left(1);
        let b: Arc<dyn Engine> = Arc::new(engine(other));
        a.delete_prefix(&owner, "").await.unwrap();
        let now = now_ms();
        const JOBS: usize = 200;
        for i in 0..JOBS {
            let job = Job {
                name: format!("job-{i:03}"),
                schedule: Some("@every 1s".into()),
                ..Job::default()
            };
            let plan = job.plan(now).unwrap();
            a.put(&owner, &job, plan.first, plan.expires, false)
                .await
                .unwrap();
        }
        let app = Arc::new(App::default());
        let deliver: Arc<dyn Deliver> = Arc::new(app.clone());
        let s1 = Scheduler::start(a.clone(), owner.clone(), "one".into(), deliver.clone());
        let s2 = Scheduler::start(b.clone(), owner.clone(), "two".into(), deliver);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        // The member both sidecars asked first (a's first, b's last).
        tokio::task::block_in_place(|| cluster.kill(0));
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        tokio::task::block_in_place(|| {
            cluster.restart(0);
            cluster.wait_healthy(Duration::from_secs(30));
        });
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        drop((s1, s2));
        let fired = app.0.lock().unwrap().clone();
        let doubled: Vec<_> = fired.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "fired twice: {doubled:?}");
        // Every job kept firing through the kill: ~8 ticks each in 8.5 s.
        // A claim applied by the killed member without an answer is taken
        // as ours when seen on retry (`claim_one`), and a settle cut by the
        // election is written again (the scheduler's outcome writer): no
        // tick waits out its 30 s lease.
        for i in 0..JOBS {
            let name = format!("job-{i:03}");
            let n = fired.keys().filter(|(j, _)| *j == name).count();
            assert!(
                n >= 5,
                "{name} fired only {n} distinct ticks in 8.5 s (want 5 or more): stalled behind a lease"
            );
        }
        // Nothing lost: every job is still there, on every member.
        assert_eq!(b.list(&owner).await.unwrap().len(), JOBS);
        a.delete_prefix(&owner, "").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_every_member_down_calls_fail_clearly_and_recover_without_a_restart() {
        let mut cluster = Cluster::start(3);
        let owner = Owner {
            namespace: "default".into(),
            app_id: "all-down".into(),
        };
        let e = engine(cluster.endpoints());
        let job = Job {
            name: "j".into(),
            due_time: Some("1h".into()),
            ..Job::default()
        };
        e.put(&owner, &job, now_ms() + 3_600_000, None, true)
            .await
            .unwrap();
        tokio::task::block_in_place(|| (0..3).for_each(|i| cluster.kill(i)));
        let started = std::time::Instant::now();
        let err = e.get(&owner, "j").await.unwrap_err().to_string();
        assert!(
            err.contains("etcd 127.0.0.1:") && err.contains("no member answered"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(7), "{err}");
        tokio::task::block_in_place(|| {
            (0..3).for_each(|i| cluster.restart(i));
            cluster.wait_healthy(Duration::from_secs(30));
        });
        // The same engine, no restart: answers again, job intact.
        let mut got = None;
        for _ in 0..50 {
            if let Ok(j) = e.get(&owner, "j").await {
                got = j;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(got, Some(job));
        e.delete_prefix(&owner, "").await.unwrap();
    }
}
