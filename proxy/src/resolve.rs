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
    /// The Dapr HTTP API's port (announced on mDNS for `tandem dashboard`).
    pub http_port: u16,
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
    /// The resolver for the configured `servers`; `None`: the system's.
    client: Option<dns::Client>,
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
        let servers: Vec<SocketAddr> = c
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
            client: if servers.is_empty() {
                None
            } else {
                Some(dns::client(&servers)?)
            },
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
            let Some(client) = &self.client else {
                return tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(|found| found.collect())
                    .map_err(|e| format!("DNS lookup of {host}: {e}"));
            };
            dns::resolve(client, &host)
                .await
                .map(|ips| {
                    ips.into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect()
                })
                .map_err(|e| format!("DNS lookup of {host}: {e}"))
        })
    }
}

/// DNS queries to given servers, through hickory-resolver (random query
/// ids, answers checked against their question, record TTLs honoured in
/// its cache, TCP when an answer is truncated).
pub mod dns {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    pub type Client = hickory_resolver::TokioResolver;

    /// A resolver asking `servers` (UDP, then TCP), in order.
    pub fn client(servers: &[SocketAddr]) -> Result<Client, String> {
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        let config = ResolverConfig::from_parts(None, vec![], name_servers);
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(1);
        opts.attempts = 2;
        opts.try_tcp_on_error = true;
        // The app id is the whole name: no search domains, no ndots games.
        opts.ndots = 0;
        builder.build().map_err(|e| format!("DNS resolver: {e}"))
    }

    /// The addresses (A and AAAA) of `host`. A name that does not exist is
    /// an empty list.
    pub async fn resolve(client: &Client, host: &str) -> Result<Vec<IpAddr>, String> {
        let fqdn = if host.ends_with('.') {
            host.to_string()
        } else {
            format!("{host}.")
        };
        match client.lookup_ip(fqdn.as_str()).await {
            Ok(found) => Ok(found.iter().collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One lookup at one server (readiness checks in tests and tools).
    pub async fn lookup(server: SocketAddr, host: &str) -> Result<Vec<IpAddr>, String> {
        resolve(&client(&[server])?, host).await
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
}
