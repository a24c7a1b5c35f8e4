//! Name resolution: from an app id (and namespace) to the internal
//! addresses of its sidecars. One trait, four resolvers, chosen by the
//! Configuration's `nameResolution.component`:
//!
//! - `local` (the default): the registry folder every sidecar on the host
//!   writes itself into (`crate::registry`); one host, no multicast.
//! - `mdns`: sidecars announce themselves on the LAN (`crate::mdns`, cargo
//!   feature `mdns`).
//! - `dns` (also `kubernetes`): a host name made from a template, looked up
//!   in DNS — `{{.ID}}-dapr.{{.Namespace}}.svc.{{.ClusterDomain}}` by
//!   default, as on Kubernetes — at the system resolver or at the `servers`
//!   given.
//! - `static`: a fixed table `apps: {id: ["host:port", …]}`.
//!
//! `Resolver` puts a short cache in front of any of them (a lookup per call
//! would cost more than the call); a caller that finds an address dead
//! `forget`s it and the next call asks again. Choosing among the addresses
//! is `crate::balance`'s work.

use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, String>> + Send + 'a>>;

/// One way of finding an app's sidecars.
pub trait Resolve: Send + Sync {
    /// Every address app `app_id` in `namespace` can be reached at now.
    /// An empty list means the app is not known; `Err` that the answer
    /// could not be had.
    fn lookup<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> Lookup<'a>;

    /// Makes this sidecar findable; what is returned undoes it on drop.
    fn register(&self, me: &Me) -> Result<Box<dyn Send + Sync>, String> {
        let _ = me;
        Ok(Box::new(()))
    }

    /// Every app (id, namespace) this resolver can list without being
    /// asked by name; resolvers that cannot list say nothing.
    fn apps(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// What a sidecar announces of itself.
#[derive(Debug, Clone)]
pub struct Me {
    pub app_id: String,
    pub namespace: String,
    pub address: SocketAddr,
}

pub struct Resolver {
    inner: Box<dyn Resolve>,
    name: &'static str,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), Answer>>,
    /// Which app's sidecar lives at an IP address, as learnt from every
    /// answer (transparent mode asks where an intercepted connection was
    /// going). Loopback addresses are not kept: they name no host.
    hosts: Mutex<Hosts>,
}

#[derive(Default)]
struct Hosts {
    owners: HashMap<IpAddr, (String, String)>,
    /// When the apps the resolver can list were last looked up.
    listed: Option<Instant>,
}

/// When an app was looked up, and what was found.
type Answer = (Instant, Vec<SocketAddr>);

impl Resolver {
    pub fn new(name: &'static str, inner: Box<dyn Resolve>) -> Self {
        Self {
            inner,
            name,
            ttl: Duration::from_secs(1),
            cache: Default::default(),
            hosts: Default::default(),
        }
    }

    /// The single-host default: the registry under `dir`.
    pub fn local(dir: impl Into<std::path::PathBuf>) -> Self {
        Self::new("local", Box::new(crate::registry::LocalRegistry::new(dir)))
    }

    /// The resolver a Configuration's `nameResolution` asks for; `None`
    /// (or component `""`) is `local` under `registry_dir`. `own_port` is
    /// this sidecar's internal port, the port DNS and mDNS peers are
    /// assumed to listen on unless told otherwise (as in Dapr).
    pub fn from_spec(
        spec: Option<&tandem_config::resources::NameResolutionSpec>,
        registry_dir: std::path::PathBuf,
        own_port: u16,
    ) -> Result<Self, String> {
        let (component, config) = match spec {
            Some(s) => (s.component.as_str(), s.configuration.clone()),
            None => ("", None),
        };
        let config = config.unwrap_or(serde_json::Value::Null);
        let config = if config.is_null() {
            serde_json::json!({})
        } else {
            config
        };
        let mut resolver = match component {
            "" | "local" => Self::local(registry_dir),
            "dns" | "kubernetes" => {
                Self::new("dns", Box::new(Dns::from_config(config.clone(), own_port)?))
            }
            "static" => Self::new("static", Box::new(Static::from_config(config.clone())?)),
            #[cfg(feature = "mdns")]
            "mdns" => Self::new("mdns", Box::new(crate::mdns::Mdns::new()?)),
            #[cfg(not(feature = "mdns"))]
            "mdns" => {
                return Err(
                    "nameResolution `mdns` needs tandem built with the `mdns` feature".into(),
                );
            }
            other => {
                return Err(format!(
                    "nameResolution component `{other}` is not supported; use local, mdns, dns (alias kubernetes) or static"
                ));
            }
        };
        if let Some(ttl) = config.get("cacheTTL") {
            let text = ttl
                .as_str()
                .ok_or("nameResolution cacheTTL must be a duration such as \"5s\"")?;
            resolver.ttl = tandem_config::parse_duration(text)
                .map_err(|e| format!("nameResolution cacheTTL `{text}`: {e}"))?;
        }
        Ok(resolver)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The addresses of `app_id`, as looked up at most `ttl` ago.
    pub async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Vec<SocketAddr>, String> {
        let key = (app_id.to_string(), namespace.to_string());
        if let Some((at, found)) = self.cache.lock().expect("resolver cache").get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(found.clone());
        }
        let found = self.inner.lookup(app_id, namespace).await?;
        {
            // An address keeps the app first found there while that app's
            // answers still name it (several apps on one host: stable).
            let me = (app_id.to_string(), namespace.to_string());
            let mut hosts = self.hosts.lock().expect("resolver hosts");
            hosts
                .owners
                .retain(|ip, owner| *owner != me || found.iter().any(|a| a.ip() == *ip));
            for a in &found {
                if !a.ip().is_loopback() && !a.ip().is_unspecified() {
                    hosts.owners.entry(a.ip()).or_insert_with(|| me.clone());
                }
            }
        }
        self.cache
            .lock()
            .expect("resolver cache")
            .insert(key, (Instant::now(), found.clone()));
        Ok(found)
    }

    /// The app (id, namespace) whose sidecar is at `ip`, if any answer
    /// said so. The apps the resolver can list are looked up first (at most
    /// once per cache lifetime, so connections to hosts outside the mesh
    /// cost a map lookup).
    pub async fn owner(&self, ip: IpAddr) -> Option<(String, String)> {
        let listed = {
            let hosts = self.hosts.lock().expect("resolver hosts");
            if let Some(found) = hosts.owners.get(&ip) {
                return Some(found.clone());
            }
            hosts.listed.is_some_and(|at| at.elapsed() < self.ttl)
        };
        if !listed {
            self.hosts.lock().expect("resolver hosts").listed = Some(Instant::now());
            for (app, ns) in self.inner.apps() {
                let _ = self.resolve(&app, &ns).await;
            }
        }
        self.hosts
            .lock()
            .expect("resolver hosts")
            .owners
            .get(&ip)
            .cloned()
    }

    /// Drops what is remembered of `app_id`: the next call looks afresh.
    pub fn forget(&self, app_id: &str, namespace: &str) {
        self.cache
            .lock()
            .expect("resolver cache")
            .remove(&(app_id.to_string(), namespace.to_string()));
    }

    pub fn register(&self, me: &Me) -> Result<Box<dyn Send + Sync>, String> {
        self.inner.register(me)
    }
}

/// `static`: `apps: {orders: ["10.0.0.5:50002", "orders-b:50002"]}`; an
/// app in a namespace other than the default is keyed `id.namespace`.
/// Host names are looked up by the system resolver on every miss.
pub struct Static {
    apps: HashMap<String, Vec<String>>,
}

impl Static {
    fn from_config(config: serde_json::Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Config {
            #[serde(default)]
            apps: HashMap<String, Vec<String>>,
            #[serde(default, rename = "cacheTTL")]
            _ttl: Option<serde_json::Value>,
        }
        let c: Config = serde_json::from_value(config)
            .map_err(|e| format!("nameResolution static configuration: {e}"))?;
        for (app, addrs) in &c.apps {
            for a in addrs {
                if a.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    return Err(format!(
                        "nameResolution static: address `{a}` of app `{app}` needs host:port"
                    ));
                }
            }
        }
        Ok(Self { apps: c.apps })
    }
}

impl Resolve for Static {
    fn lookup<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let key = if namespace.is_empty() || namespace == "default" {
                app_id.to_string()
            } else {
                format!("{app_id}.{namespace}")
            };
            let Some(addrs) = self.apps.get(&key) else {
                return Ok(Vec::new());
            };
            let mut found = Vec::new();
            for a in addrs {
                match tokio::net::lookup_host(a.as_str()).await {
                    Ok(it) => found.extend(it),
                    Err(e) => {
                        tracing::warn!(address = %a, app = app_id, error = %e, "static name resolution: cannot look up")
                    }
                }
            }
            Ok(found)
        })
    }

    fn apps(&self) -> Vec<(String, String)> {
        let mut keys: Vec<&String> = self.apps.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| match k.split_once('.') {
                Some((id, ns)) => (id.to_string(), ns.to_string()),
                None => (k.clone(), String::new()),
            })
            .collect()
    }
}

/// `dns`: the address of app `ID` is the host name `template` makes,
/// looked up for A and AAAA records.
pub struct Dns {
    template: String,
    cluster_domain: String,
    port: u16,
    /// Where to send queries; empty: the system resolver.
    servers: Vec<SocketAddr>,
}

const DEFAULT_TEMPLATE: &str = "{{.ID}}-dapr.{{.Namespace}}.svc.{{.ClusterDomain}}";

impl Dns {
    fn from_config(config: serde_json::Value, own_port: u16) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Config {
            template: Option<String>,
            #[serde(rename = "clusterDomain")]
            cluster_domain: Option<String>,
            port: Option<serde_json::Value>,
            #[serde(default)]
            servers: Vec<String>,
            #[serde(default, rename = "cacheTTL")]
            _ttl: Option<serde_json::Value>,
        }
        let c: Config = serde_json::from_value(config)
            .map_err(|e| format!("nameResolution dns configuration: {e}"))?;
        let port = match c.port {
            None => own_port,
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or(format!("nameResolution dns: port {n} is not a port"))?,
            Some(serde_json::Value::String(s)) => s
                .parse()
                .map_err(|_| format!("nameResolution dns: port `{s}` is not a port"))?,
            Some(other) => return Err(format!("nameResolution dns: port {other} is not a port")),
        };
        if port == 0 {
            return Err(
                "nameResolution dns needs the peers' internal port: set `port` in its configuration or --dapr-internal-grpc-port"
                    .into(),
            );
        }
        let servers = c
            .servers
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("nameResolution dns: server `{s}` is not ip or ip:port"))
            })
            .collect::<Result<_, _>>()?;
        let template = c.template.unwrap_or_else(|| DEFAULT_TEMPLATE.into());
        for placeholder in placeholders(&template) {
            if !matches!(
                placeholder,
                ".ID" | ".Namespace" | ".Data.namespace" | ".ClusterDomain" | ".Port"
            ) {
                return Err(format!(
                    "nameResolution dns: template `{template}` uses {{{{{placeholder}}}}}; known are .ID, .Namespace, .ClusterDomain, .Port"
                ));
            }
        }
        Ok(Self {
            template,
            cluster_domain: c.cluster_domain.unwrap_or_else(|| "cluster.local".into()),
            port,
            servers,
        })
    }

    /// `host` and `port` for app `id`.
    fn target(&self, id: &str, namespace: &str) -> (String, u16) {
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let name = self
            .template
            .replace("{{.ID}}", id)
            .replace("{{.Namespace}}", namespace)
            .replace("{{.Data.namespace}}", namespace)
            .replace("{{.ClusterDomain}}", &self.cluster_domain)
            .replace("{{.Port}}", &self.port.to_string());
        match name.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => {
                (host.to_string(), port.parse().expect("checked"))
            }
            _ => (name, self.port),
        }
    }
}

fn placeholders(template: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            found.push(after);
            break;
        };
        found.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    found
}

impl Resolve for Dns {
    fn lookup<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            // A name that cannot be a DNS label is not an app anyone has.
            if !app_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Ok(Vec::new());
            }
            let (host, port) = self.target(app_id, namespace);
            if self.servers.is_empty() {
                return tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(|found| found.collect())
                    .map_err(|e| format!("DNS lookup of {host}: {e}"));
            }
            let mut last = String::new();
            for server in &self.servers {
                match dns::lookup(*server, &host).await {
                    Ok(ips) => {
                        return Ok(ips
                            .into_iter()
                            .map(|ip| SocketAddr::new(ip, port))
                            .collect());
                    }
                    Err(e) => last = format!("DNS server {server} for {host}: {e}"),
                }
            }
            Err(last)
        })
    }
}

/// A small DNS client: A and AAAA questions over UDP, answers read with
/// name compression, as much as name resolution needs and nothing more.
pub mod dns {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::time::Duration;

    const A: u16 = 1;
    const AAAA: u16 = 28;

    /// The addresses of `host` (A and AAAA) from `server`. One family
    /// answered is enough: some servers refuse the question they have no
    /// records for.
    pub async fn lookup(server: SocketAddr, host: &str) -> Result<Vec<IpAddr>, String> {
        let (v4, v6) = tokio::join!(query(server, host, A), query(server, host, AAAA));
        match (v4, v6) {
            (Err(e), Err(_)) => Err(e),
            (v4, v6) => Ok(v4
                .unwrap_or_default()
                .into_iter()
                .chain(v6.unwrap_or_default())
                .collect()),
        }
    }

    async fn query(server: SocketAddr, host: &str, qtype: u16) -> Result<Vec<IpAddr>, String> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("address")
        } else {
            "[::]:0".parse().expect("address")
        };
        let sock = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| e.to_string())?;
        sock.connect(server).await.map_err(|e| e.to_string())?;
        let id = (std::process::id() as u16) ^ (qtype.wrapping_mul(7919));
        let question = encode(id, host, qtype)?;
        let mut buf = vec![0u8; 4096];
        // Two tries: UDP may lose the first.
        for _ in 0..2 {
            sock.send(&question).await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                Ok(Ok(n)) => match decode(&buf[..n], id, qtype) {
                    Ok(Some(ips)) => return Ok(ips),
                    Ok(None) => continue, // not our answer
                    Err(e) => return Err(e),
                },
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => continue,
            }
        }
        Err("no answer within 2s".into())
    }

    pub fn encode(id: u16, host: &str, qtype: u16) -> Result<Vec<u8>, String> {
        let mut q = Vec::with_capacity(32 + host.len());
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
        for label in host.trim_end_matches('.').split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("`{host}` is not a valid DNS name"));
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes()); // IN
        Ok(q)
    }

    /// `None`: not the answer to question `id`. NXDOMAIN is an empty list.
    pub fn decode(msg: &[u8], id: u16, qtype: u16) -> Result<Option<Vec<IpAddr>>, String> {
        let short = || "short DNS answer".to_string();
        let u16_at = |i: usize| -> Result<u16, String> {
            msg.get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(short)
        };
        if msg.len() < 12 || u16_at(0)? != id || msg[2] & 0x80 == 0 {
            return Ok(None);
        }
        if msg[2] & 0x02 != 0 {
            return Err("answer truncated (too many records for UDP)".into());
        }
        match msg[3] & 0x0f {
            0 => {}
            3 => return Ok(Some(Vec::new())),
            rcode => return Err(format!("server answered rcode {rcode}")),
        }
        let (qd, an) = (u16_at(4)?, u16_at(6)?);
        let mut at = 12;
        for _ in 0..qd {
            at = skip_name(msg, at)? + 4;
        }
        let mut ips = Vec::new();
        for _ in 0..an {
            at = skip_name(msg, at)?;
            let rtype = u16_at(at)?;
            let len = u16_at(at + 8)? as usize;
            let data = msg.get(at + 10..at + 10 + len).ok_or_else(short)?;
            match (rtype, len) {
                (A, 4) if qtype == A => ips.push(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                ))),
                (AAAA, 16) if qtype == AAAA => {
                    let b: [u8; 16] = data.try_into().expect("16 bytes");
                    ips.push(IpAddr::V6(Ipv6Addr::from(b)))
                }
                _ => {} // CNAME and the like: the addresses follow
            }
            at += 10 + len;
        }
        Ok(Some(ips))
    }

    /// The index just past the (possibly compressed) name at `at`.
    fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, String> {
        loop {
            let len = *msg.get(at).ok_or("short DNS answer")?;
            match len {
                0 => return Ok(at + 1),
                l if l & 0xc0 == 0xc0 => return Ok(at + 2),
                l => at += 1 + l as usize,
            }
        }
    }
}

/// A resolver over a shared `Arc`, for callers that keep one of their own.
impl<R: Resolve + ?Sized> Resolve for Arc<R> {
    fn lookup<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> Lookup<'a> {
        (**self).lookup(app_id, namespace)
    }
    fn register(&self, me: &Me) -> Result<Box<dyn Send + Sync>, String> {
        (**self).register(me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        component: &str,
        config: serde_json::Value,
    ) -> tandem_config::resources::NameResolutionSpec {
        tandem_config::resources::NameResolutionSpec {
            component: component.into(),
            version: "v1".into(),
            configuration: Some(config),
        }
    }

    #[test]
    fn dns_template_renders_kubernetes_names() {
        let d = Dns::from_config(serde_json::json!({}), 50002).unwrap();
        assert_eq!(
            d.target("orders", ""),
            ("orders-dapr.default.svc.cluster.local".into(), 50002)
        );
        let d = Dns::from_config(
            serde_json::json!({"template": "{{.ID}}.{{.Namespace}}.internal:{{.Port}}", "port": "6000", "clusterDomain": "x"}),
            0,
        )
        .unwrap();
        assert_eq!(
            d.target("orders", "prod"),
            ("orders.prod.internal".into(), 6000)
        );
        let d = Dns::from_config(serde_json::json!({"template": "{{.ID}}.svc:7000"}), 1).unwrap();
        assert_eq!(d.target("a", ""), ("a.svc".into(), 7000));
    }

    #[test]
    fn bad_configurations_are_refused_with_what_to_fix() {
        let dir = std::env::temp_dir();
        let err = |c: &str, v| {
            Resolver::from_spec(Some(&spec(c, v)), dir.clone(), 0)
                .err()
                .unwrap()
        };
        assert!(err("consul", serde_json::json!({})).contains("not supported"));
        assert!(err("dns", serde_json::json!({})).contains("internal port"));
        assert!(err("dns", serde_json::json!({"port": 1, "template": "{{.Id}}"})).contains(".Id"));
        assert!(err("dns", serde_json::json!({"port": 1, "servers": ["nope"]})).contains("nope"));
        assert!(err("dns", serde_json::json!({"port": 1, "colour": 1})).contains("colour"));
        assert!(
            err("static", serde_json::json!({"apps": {"a": ["nohost"]}})).contains("host:port")
        );
        assert!(err("local", serde_json::json!({"cacheTTL": "soon"})).contains("cacheTTL"));
        assert_eq!(
            Resolver::from_spec(None, dir.clone(), 0).unwrap().name(),
            "local"
        );
    }

    #[tokio::test]
    async fn static_table_resolves_by_namespace() {
        let r = Resolver::from_spec(
            Some(&spec(
                "static",
                serde_json::json!({"apps": {"orders": ["127.0.0.1:7001", "127.0.0.2:7001"], "orders.prod": ["localhost:7002"]}}),
            )),
            std::env::temp_dir(),
            0,
        )
        .unwrap();
        assert_eq!(r.resolve("orders", "").await.unwrap().len(), 2);
        let prod = r.resolve("orders", "prod").await.unwrap();
        assert!(!prod.is_empty() && prod.iter().all(|a| a.port() == 7002));
        assert!(r.resolve("billing", "").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_host_address_names_its_app() {
        let r = Resolver::from_spec(
            Some(&spec(
                "static",
                serde_json::json!({"apps": {"orders": ["10.1.0.5:50002"], "ledger.prod": ["10.1.0.6:50002"], "local": ["127.0.0.1:50002"], "zeta": ["10.1.0.5:50003"]}}),
            )),
            std::env::temp_dir(),
            0,
        )
        .unwrap();
        let owner = |ip: &str| r.owner(ip.parse().unwrap());
        // Two apps on one host: the first listed keeps it.
        assert_eq!(owner("10.1.0.5").await, Some(("orders".into(), "".into())));
        r.resolve("zeta", "").await.unwrap();
        assert_eq!(owner("10.1.0.5").await, Some(("orders".into(), "".into())));
        assert_eq!(
            owner("10.1.0.6").await,
            Some(("ledger".into(), "prod".into()))
        );
        assert_eq!(owner("10.1.0.7").await, None);
        assert_eq!(owner("127.0.0.1").await, None, "loopback names no host");
    }

    #[test]
    fn dns_messages_round_trip() {
        let q = dns::encode(7, "orders-dapr.default.svc", 1).unwrap();
        // An answer: the question echoed, then a CNAME and an A record
        // whose names are compressed pointers to the question.
        let mut a = q.clone();
        a[2] |= 0x80;
        a[7] = 2;
        a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
        assert_eq!(
            dns::decode(&a, 7, 1).unwrap(),
            Some(vec!["10.1.2.3".parse().unwrap()])
        );
        assert_eq!(
            dns::decode(&a, 8, 1).unwrap(),
            None,
            "another question's answer"
        );
        let mut nx = q.clone();
        nx[2] |= 0x80;
        nx[3] = 3;
        assert_eq!(dns::decode(&nx, 7, 1).unwrap(), Some(vec![]));
        assert!(dns::decode(&a[..a.len() - 3], 7, 1).is_err(), "cut short");
        assert!(dns::encode(1, "a..b", 1).is_err());
    }
}
