//! The rules of transparent mode, as data: two chains of our own in the nat
//! table — `TANDEM_INBOUND` (from PREROUTING) redirects inbound TCP to the
//! sidecar's inbound port, `TANDEM_OUTPUT` (from OUTPUT) redirects the
//! app's outbound TCP to its outbound port — with what must never be
//! redirected returned first: the sidecar's own traffic (by uid/gid, which
//! is also what prevents a redirect loop), loopback, skipped ports and
//! subnets. Every rule carries a `tandem/<why>` comment.
//!
//! Applying is idempotent: the chains are declared in an
//! `iptables-restore --noflush` script (declaring a chain creates it, or
//! flushes it when it exists) and the jumps into them are added only when
//! `iptables-save` does not show them already. This module only builds
//! text; `tandem iptables` runs the programs.

use std::fmt::Write as _;

pub const INBOUND_CHAIN: &str = "TANDEM_INBOUND";
pub const OUTPUT_CHAIN: &str = "TANDEM_OUTPUT";

/// iptables' multiport match takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    /// Where redirected inbound connections go.
    pub inbound_port: u16,
    /// Where the app's redirected outbound connections go.
    pub outbound_port: u16,
    /// The user (and group) the sidecar runs as: its own connections are
    /// never redirected.
    pub proxy_uid: Option<u32>,
    pub proxy_gid: Option<u32>,
    /// Inbound ports left alone (the sidecar's API and metrics ports are
    /// added by the caller).
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    /// CIDRs whose traffic is left alone (source for inbound, destination
    /// for outbound).
    pub skip_inbound_subnets: Vec<String>,
    pub skip_outbound_subnets: Vec<String>,
}

impl Redirect {
    /// Refuses what iptables would refuse later, with what to fix.
    pub fn check(&self) -> Result<(), String> {
        if self.inbound_port == 0 || self.outbound_port == 0 {
            return Err("--inbound-port and --outbound-port must not be 0".into());
        }
        if self.inbound_port == self.outbound_port {
            return Err("--inbound-port and --outbound-port must differ".into());
        }
        if self.proxy_uid.is_none() && self.proxy_gid.is_none() {
            return Err(
                "name the sidecar's --proxy-uid (or --proxy-gid): without it the sidecar's own connections would be redirected to itself"
                    .into(),
            );
        }
        for cidr in self
            .skip_inbound_subnets
            .iter()
            .chain(&self.skip_outbound_subnets)
        {
            check_cidr(cidr)?;
        }
        Ok(())
    }

    /// The rules of both chains, as `-A CHAIN …` lines (no table header).
    pub fn chain_rules(&self, ipv6: bool) -> Vec<String> {
        let mut out = Vec::new();
        let family = |cidr: &String| cidr.contains(':') == ipv6;
        // Inbound: skipped ports and sources, then everything else.
        for group in self.skip_inbound_ports.chunks(MULTIPORT_MAX) {
            out.push(format!(
                "-A {INBOUND_CHAIN} -p tcp -m multiport --dports {} -m comment --comment \"tandem/skip-inbound-ports\" -j RETURN",
                join(group)
            ));
        }
        for cidr in self.skip_inbound_subnets.iter().filter(|c| family(c)) {
            out.push(format!(
                "-A {INBOUND_CHAIN} -s {cidr} -m comment --comment \"tandem/skip-inbound-subnet\" -j RETURN"
            ));
        }
        out.push(format!(
            "-A {INBOUND_CHAIN} -p tcp -m comment --comment \"tandem/redirect-inbound\" -j REDIRECT --to-ports {}",
            self.inbound_port
        ));
        // Outbound: the sidecar's own traffic, loopback, skipped ports and
        // destinations, then everything else.
        if let Some(uid) = self.proxy_uid {
            out.push(format!(
                "-A {OUTPUT_CHAIN} -m owner --uid-owner {uid} -m comment --comment \"tandem/ignore-proxy-uid\" -j RETURN"
            ));
        }
        if let Some(gid) = self.proxy_gid {
            out.push(format!(
                "-A {OUTPUT_CHAIN} -m owner --gid-owner {gid} -m comment --comment \"tandem/ignore-proxy-gid\" -j RETURN"
            ));
        }
        out.push(format!(
            "-A {OUTPUT_CHAIN} -o lo -m comment --comment \"tandem/ignore-loopback\" -j RETURN"
        ));
        for group in self.skip_outbound_ports.chunks(MULTIPORT_MAX) {
            out.push(format!(
                "-A {OUTPUT_CHAIN} -p tcp -m multiport --dports {} -m comment --comment \"tandem/skip-outbound-ports\" -j RETURN",
                join(group)
            ));
        }
        for cidr in self.skip_outbound_subnets.iter().filter(|c| family(c)) {
            out.push(format!(
                "-A {OUTPUT_CHAIN} -d {cidr} -m comment --comment \"tandem/skip-outbound-subnet\" -j RETURN"
            ));
        }
        out.push(format!(
            "-A {OUTPUT_CHAIN} -p tcp -m comment --comment \"tandem/redirect-outbound\" -j REDIRECT --to-ports {}",
            self.outbound_port
        ));
        out
    }
}

/// The jumps from the built-in chains into ours, as `iptables-save`
/// prints them.
pub fn jumps() -> [String; 2] {
    [
        format!(
            "-A PREROUTING -p tcp -m comment --comment \"tandem/install-inbound\" -j {INBOUND_CHAIN}"
        ),
        format!(
            "-A OUTPUT -p tcp -m comment --comment \"tandem/install-outbound\" -j {OUTPUT_CHAIN}"
        ),
    ]
}

/// The `iptables-restore --noflush` script that installs `r`, given what
/// `iptables-save -t nat` prints now (jumps already there are not added
/// twice).
pub fn install_script(r: &Redirect, ipv6: bool, saved: &str) -> String {
    let mut s = String::from("*nat\n");
    let _ = writeln!(s, ":{INBOUND_CHAIN} - [0:0]");
    let _ = writeln!(s, ":{OUTPUT_CHAIN} - [0:0]");
    for rule in r.chain_rules(ipv6) {
        s.push_str(&rule);
        s.push('\n');
    }
    for jump in jumps() {
        if !saved.lines().any(|l| l.trim() == jump) {
            s.push_str(&jump);
            s.push('\n');
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// The iptables argument lists that remove what `install_script` made,
/// given what `iptables-save -t nat` prints now: nothing for what is not
/// there, so removing twice is harmless.
pub fn remove_commands(saved: &str) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for line in saved.lines() {
        let line = line.trim();
        let jumps_to_ours = (line.starts_with("-A PREROUTING ") || line.starts_with("-A OUTPUT "))
            && (line.ends_with(&format!("-j {INBOUND_CHAIN}"))
                || line.ends_with(&format!("-j {OUTPUT_CHAIN}")));
        if jumps_to_ours {
            let mut args = vec!["-t".to_string(), "nat".to_string()];
            args.extend(shell_words(&line.replacen("-A", "-D", 1)));
            cmds.push(args);
        }
    }
    for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
        let declared = format!(":{chain} ");
        if saved.lines().any(|l| l.starts_with(&declared)) {
            for op in ["-F", "-X"] {
                cmds.push(vec!["-t".into(), "nat".into(), op.into(), chain.into()]);
            }
        }
    }
    cmds
}

/// Our lines of an `iptables-save` output.
pub fn ours(saved: &str) -> Vec<&str> {
    saved
        .lines()
        .filter(|l| l.contains(INBOUND_CHAIN) || l.contains(OUTPUT_CHAIN))
        .collect()
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn check_cidr(cidr: &str) -> Result<(), String> {
    let (ip, bits) = cidr.split_once('/').unwrap_or((cidr, ""));
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("`{cidr}` is not a subnet such as 10.0.0.0/8"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if !bits.is_empty() && bits.parse::<u8>().ok().is_none_or(|b| b > max) {
        return Err(format!("`{cidr}` is not a subnet such as 10.0.0.0/8"));
    }
    Ok(())
}

/// Splits an `iptables-save` rule into arguments, keeping quoted comments
/// whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_uid: Some(2102),
            proxy_gid: None,
            skip_inbound_ports: (3500..3520).collect(),
            skip_outbound_ports: vec![5432, 6379],
            skip_inbound_subnets: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
            skip_outbound_subnets: vec!["192.168.0.0/16".into()],
        }
    }

    #[test]
    fn rules_return_what_is_skipped_before_redirecting() {
        let rules = redirect().chain_rules(false);
        // 20 skipped ports take two multiport rules.
        assert_eq!(
            rules.iter().filter(|r| r.contains("--dports 35")).count(),
            2
        );
        let pos = |needle: &str| rules.iter().position(|r| r.contains(needle)).unwrap();
        assert!(pos("tandem/ignore-proxy-uid") < pos("tandem/redirect-outbound"));
        assert!(pos("tandem/ignore-loopback") < pos("tandem/redirect-outbound"));
        assert!(pos("skip-inbound-subnet") < pos("tandem/redirect-inbound"));
        assert!(rules.iter().any(|r| r.contains("--dports 5432,6379")));
        assert!(
            !rules.iter().any(|r| r.contains("fd00::/8")),
            "v6 subnet not in v4 rules"
        );
        assert!(
            redirect()
                .chain_rules(true)
                .iter()
                .any(|r| r.contains("fd00::/8"))
        );
        assert!(rules.iter().all(|r| r.contains("--comment \"tandem/")));
    }

    #[test]
    fn install_adds_jumps_only_once_and_remove_undoes_it() {
        let r = redirect();
        let first = install_script(&r, false, "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        assert!(first.contains(":TANDEM_INBOUND - [0:0]"));
        assert_eq!(first.matches("-A PREROUTING").count(), 1);
        // As iptables-save shows it after the first install.
        let saved = format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:TANDEM_INBOUND - [0:0]\n:TANDEM_OUTPUT - [0:0]\n{}\n{}\nCOMMIT\n",
            jumps().join("\n"),
            r.chain_rules(false).join("\n")
        );
        let again = install_script(&r, false, &saved);
        assert_eq!(again.matches("-A PREROUTING").count(), 0, "{again}");
        assert_eq!(again.matches("-A OUTPUT ").count(), 0);
        let remove = remove_commands(&saved);
        assert_eq!(
            remove.len(),
            2 + 4,
            "two jumps, flush and delete two chains"
        );
        assert_eq!(
            remove[0],
            [
                "-t",
                "nat",
                "-D",
                "PREROUTING",
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "tandem/install-inbound",
                "-j",
                "TANDEM_INBOUND"
            ]
        );
        assert!(remove_commands("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n").is_empty());
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let mut r = redirect();
        r.proxy_uid = None;
        assert!(r.check().unwrap_err().contains("--proxy-uid"));
        let mut r = redirect();
        r.outbound_port = r.inbound_port;
        assert!(r.check().unwrap_err().contains("differ"));
        let mut r = redirect();
        r.skip_outbound_subnets = vec!["10.0.0.0/99".into()];
        assert!(r.check().unwrap_err().contains("10.0.0.0/99"));
        assert!(redirect().check().is_ok());
    }
}
