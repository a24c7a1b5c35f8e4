//! `coordination.*` components: the engine everything that coordinates
//! sidecars runs on (the job scheduler and actor placement; workflows
//! next). Without one, the sidecars of a host share the embedded SQLite
//! file in `$TANDEM_HOME`; with a `coordination.etcd` component, sidecars
//! on any number of hosts share an etcd cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tandem_stateful::engine::Engine;
use tandem_stateful::etcd::{Etcd, EtcdOptions};
use tandem_stateful::placement::Placement;

/// A coordination engine and what to call it in messages.
#[derive(Clone)]
pub struct Coordination {
    pub engine: Arc<dyn Engine>,
    /// The actor placement table, in the same engine.
    pub placement: Arc<dyn Placement>,
    pub what: String,
    /// Where it is, for the metadata API's `scheduler`.
    pub addresses: Vec<String>,
    /// How long a sidecar holds a claimed trigger (`leaseDuration`).
    pub lease: Duration,
}

/// `coordination.etcd`: `endpoints` (comma-separated `host:port` or
/// `http://host:port`, one per member), `keyPrefix` (default `tandem`),
/// `timeout` (one member's time to answer, default `3s`),
/// `leaseDuration` (how long a sidecar holds a trigger it took: a sidecar
/// that dies with triggers in flight has them fired by another after that
/// long; default `30s`, at least three times `timeout`).
pub fn etcd(m: &BTreeMap<String, String>) -> Result<Coordination, String> {
    for key in ["username", "password", "tlsEnable", "ca", "cert", "key"] {
        if m.get(key).is_some_and(|v| !v.is_empty()) {
            return Err(format!(
                "metadata `{key}`: authentication and TLS to etcd are not supported yet; run etcd on a private network"
            ));
        }
    }
    let endpoints: Vec<String> = m
        .get("endpoints")
        .map(|e| {
            e.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if endpoints.is_empty() {
        return Err(
            "metadata `endpoints` is required: the etcd members' client addresses, comma-separated (host:port)"
                .into(),
        );
    }
    let prefix = m
        .get("keyPrefix")
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "tandem".into());
    let timeout = super::metadata::duration(m, "timeout", Duration::from_secs(3))?;
    if timeout.is_zero() {
        return Err("metadata `timeout` must be more than 0".into());
    }
    let lease = super::metadata::duration(m, "leaseDuration", tandem_stateful::scheduler::LEASE)?;
    if lease < Duration::from_secs(1) {
        return Err(format!(
            "metadata `leaseDuration` is {} ms: at least 1s is needed (a trigger in flight gets two thirds of it)",
            lease.as_millis()
        ));
    }
    if lease < timeout * 3 {
        return Err(format!(
            "metadata `leaseDuration` ({} ms) must be at least three times `timeout` ({} ms): a claim is written, answered and settled within one lease, each write taking up to `timeout`",
            lease.as_millis(),
            timeout.as_millis()
        ));
    }
    let addresses = endpoints
        .iter()
        .map(|e| e.trim_start_matches("http://").to_string())
        .collect();
    let engine = Arc::new(Etcd::new(&EtcdOptions {
        endpoints,
        prefix,
        timeout,
    })?);
    Ok(Coordination {
        what: engine.describe().to_string(),
        placement: engine.clone(),
        engine,
        addresses,
        lease,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn etcd_metadata_is_checked_with_messages_that_say_what_to_fix() {
        let err = |pairs: &[(&str, &str)]| etcd(&meta(pairs)).err().unwrap();
        assert!(err(&[]).contains("`endpoints` is required"));
        assert!(err(&[("endpoints", " , ")]).contains("`endpoints` is required"));
        assert!(err(&[("endpoints", "https://e:2379")]).contains("TLS"));
        assert!(err(&[("endpoints", "e:2379"), ("password", "x")]).contains("`password`"));
        assert!(err(&[("endpoints", "e:2379"), ("timeout", "soon")]).contains("`timeout`"));
        assert!(err(&[("endpoints", "e:2379"), ("timeout", "0s")]).contains("more than 0"));
        assert!(
            err(&[("endpoints", "e:2379"), ("leaseDuration", "200ms")]).contains("at least 1s")
        );
        assert!(
            err(&[("endpoints", "e:2379"), ("leaseDuration", "5s")])
                .contains("at least three times `timeout` (3000 ms)")
        );
        assert!(
            etcd(&meta(&[
                ("endpoints", "e:2379"),
                ("leaseDuration", "3s"),
                ("timeout", "1s")
            ]))
            .is_ok()
        );
        let c = etcd(&meta(&[
            ("endpoints", "http://10.0.0.1:2379, 10.0.0.2:2379"),
            ("leaseDuration", "10s"),
        ]))
        .unwrap();
        assert_eq!(c.addresses, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!(c.what, "etcd 10.0.0.1:2379,10.0.0.2:2379");
    }
}
