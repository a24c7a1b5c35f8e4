//! `nameResolution: mdns`: every sidecar announces one service instance of
//! type `_tandem._tcp.local.` (TXT `app`, `ns`; port = its internal port;
//! addresses = the host's, or `DAPR_HOST_IP`), and browses that type for
//! as long as it runs, so a lookup is a read of what has been heard. A
//! sidecar that stops withdraws its instance (a goodbye packet); one that
//! dies is forgotten when its records expire.

use crate::resolve::{Lookup, Me, Resolve};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SERVICE: &str = "_tandem._tcp.local.";

/// What was heard: instance full name → (app, namespace, addresses).
/// By instance name: app, namespace, addresses, Dapr HTTP port (TXT
/// `http`, absent from older announcements).
type Heard = Arc<Mutex<HashMap<String, (String, String, Vec<SocketAddr>, Option<u16>)>>>;

pub struct Mdns {
    daemon: ServiceDaemon,
    heard: Heard,
}

impl Mdns {
    pub fn new() -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: cannot start: {e}"))?;
        let events = daemon
            .browse(SERVICE)
            .map_err(|e| format!("mDNS: cannot browse: {e}"))?;
        let heard: Heard = Default::default();
        let into = heard.clone();
        std::thread::Builder::new()
            .name("tandem-mdns".into())
            .spawn(move || {
                for event in events.iter() {
                    match event {
                        ServiceEvent::ServiceResolved(info) => {
                            let (Some(app), ns) = (
                                info.get_property_val_str("app"),
                                info.get_property_val_str("ns").unwrap_or(""),
                            ) else {
                                continue;
                            };
                            let addrs = info
                                .get_addresses()
                                .iter()
                                .filter_map(|ip| {
                                    let scope = match ip {
                                        mdns_sd::ScopedIp::V6(v6) => Some(v6.scope_id().index),
                                        _ => None,
                                    };
                                    socket_addr(ip.to_ip_addr(), scope, info.get_port())
                                })
                                .collect();
                            let http = info
                                .get_property_val_str("http")
                                .and_then(|p| p.parse().ok());
                            tracing::debug!(instance = %info.fullname, app, "mDNS: heard");
                            into.lock().expect("mdns").insert(
                                info.fullname.clone(),
                                (app.to_string(), ns.to_string(), addrs, http),
                            );
                        }
                        ServiceEvent::ServiceRemoved(_, fullname) => {
                            tracing::debug!(instance = %fullname, "mDNS: gone");
                            into.lock().expect("mdns").remove(&fullname);
                        }
                        _ => {}
                    }
                }
            })
            .map_err(|e| format!("mDNS: {e}"))?;
        Ok(Self { daemon, heard })
    }

    fn heard(&self, app_id: &str, namespace: &str) -> Vec<SocketAddr> {
        let mut found: Vec<SocketAddr> = self
            .heard
            .lock()
            .expect("mdns")
            .values()
            .filter(|(a, ns, _, _)| a == app_id && ns == namespace)
            .flat_map(|(_, _, addrs, _)| addrs.iter().copied())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// Every sidecar heard: app, namespace, an address of its host (the
    /// announced port is the internal one) and its Dapr HTTP port.
    pub fn heard_all(&self) -> Vec<(String, String, SocketAddr, Option<u16>)> {
        let mut out: Vec<_> = self
            .heard
            .lock()
            .expect("mdns")
            .values()
            .filter_map(|(app, ns, addrs, http)| {
                // The same address every time (IPv4 first), so the
                // dashboard's key for it does not change between reads.
                let best = addrs
                    .iter()
                    .filter(|a| !matches!(a, SocketAddr::V6(v6) if v6.scope_id() != 0))
                    .min_by_key(|a| (a.is_ipv6(), **a))?;
                Some((app.clone(), ns.clone(), *best, *http))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Resolve for Mdns {
    fn lookup<'a>(&'a self, app_id: &'a str, namespace: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            // An app not heard yet may be announcing right now (a peer
            // that just started): listen a little before saying no.
            for _ in 0..20 {
                let found = self.heard(app_id, namespace);
                if !found.is_empty() {
                    return Ok(found);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Vec::new())
        })
    }

    fn register(&self, me: &Me) -> Result<Box<dyn Send + Sync>, String> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "tandem".into());
        let instance = format!("{}-{}-{}", me.app_id, std::process::id(), me.address.port());
        let props = HashMap::from([
            ("app".to_string(), me.app_id.clone()),
            ("ns".to_string(), me.namespace.clone()),
            ("http".to_string(), me.http_port.to_string()),
        ]);
        let fixed = std::env::var("DAPR_HOST_IP").unwrap_or_default();
        let mut info = ServiceInfo::new(
            SERVICE,
            &instance,
            &format!("{host}.local."),
            fixed.as_str(),
            me.address.port(),
            props,
        )
        .map_err(|e| format!("mDNS: cannot announce {instance}: {e}"))?;
        if fixed.is_empty() {
            info = info.enable_addr_auto();
        }
        let fullname = info.get_fullname().to_string();
        self.daemon
            .register(info)
            .map_err(|e| format!("mDNS: cannot announce {instance}: {e}"))?;
        Ok(Box::new(Announcement {
            daemon: self.daemon.clone(),
            fullname,
        }))
    }
}

/// This sidecar's instance; withdrawn on drop.
struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            // The goodbye packet goes out before the process exits.
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// The address to dial for one address an mDNS answer carried. An IPv6
/// link-local address is only reachable through the interface it was heard
/// on: it keeps that interface as its scope, and without one it is left out
/// (dialled bare it fails with "Invalid argument", and those failures would
/// count against the app's breaker).
fn socket_addr(ip: std::net::IpAddr, scope: Option<u32>, port: u16) -> Option<SocketAddr> {
    match ip {
        std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => match scope {
            Some(s) if s != 0 => Some(SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, s))),
            _ => None,
        },
        other => Some(SocketAddr::new(other, port)),
    }
}

#[cfg(test)]
mod tests {
    use super::socket_addr;

    #[test]
    fn link_local_addresses_keep_their_interface_or_are_left_out() {
        let ll: std::net::IpAddr = "fe80::1".parse().unwrap();
        let a = socket_addr(ll, Some(3), 7000).unwrap();
        assert_eq!(a.to_string(), "[fe80::1%3]:7000");
        assert_eq!(socket_addr(ll, None, 7000), None);
        assert_eq!(socket_addr(ll, Some(0), 7000), None);
        let g: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            socket_addr(g, Some(3), 7000).unwrap().to_string(),
            "[2001:db8::1]:7000"
        );
        let v4: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            socket_addr(v4, None, 7000).unwrap().to_string(),
            "10.0.0.2:7000"
        );
    }
}
