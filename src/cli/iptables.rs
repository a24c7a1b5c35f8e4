//! `tandem iptables`: installs, removes, shows and validates the nat rules
//! of transparent mode in the current network namespace (run it inside the
//! app's, e.g. with `ip netns exec`). The rules themselves are built by
//! `tandem_proxy::iptables`; this runs `iptables-save` / `iptables-restore`
//! (and the ip6tables pair with `--ipv6`), or prints what it would run
//! with `--dry-run`.

use anyhow::{Context, Result, anyhow};
use std::io::{Read, Write};
use std::process::{Command as Cmd, Stdio};
use std::time::Duration;
use tandem_proxy::iptables::{Redirect, install_script, ours, remove_commands};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Install the redirect rules; running it again changes nothing.
    Install(InstallArgs),
    /// Remove the rules; removing what is not there is not an error.
    Remove(Common),
    /// Print tandem's rules as installed.
    Show(Common),
    /// Prove that an outbound connection is redirected: listens on the
    /// outbound port (the sidecar must not be running yet) and connects to
    /// an address of TEST-NET that only the redirect can answer.
    Validate {
        #[arg(long, default_value_t = 15001)]
        outbound_port: u16,
    },
}

#[derive(clap::Args)]
pub struct Common {
    /// Also ip6tables.
    #[arg(long)]
    ipv6: bool,
    /// Print what would run instead of running it.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Where inbound connections are redirected.
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// Where the app's outbound connections are redirected.
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    /// The uid the sidecar runs as: its own connections are never
    /// redirected (this is what prevents a loop).
    #[arg(long)]
    proxy_uid: Option<u32>,
    #[arg(long)]
    proxy_gid: Option<u32>,
    /// Inbound ports left alone, comma separated (the sidecar's API and
    /// metrics ports belong here).
    #[arg(long, value_delimiter = ',')]
    skip_inbound_ports: Vec<u16>,
    #[arg(long, value_delimiter = ',')]
    skip_outbound_ports: Vec<u16>,
    /// Sources (CIDR) whose inbound connections are left alone.
    #[arg(long, value_delimiter = ',')]
    skip_inbound_subnets: Vec<String>,
    /// Destinations (CIDR) left alone.
    #[arg(long, value_delimiter = ',')]
    skip_outbound_subnets: Vec<String>,
    #[command(flatten)]
    common: Common,
}

/// `iptables` or `ip6tables` programs.
fn program(ipv6: bool, what: &str) -> String {
    format!("{}{what}", if ipv6 { "ip6tables" } else { "iptables" })
}

fn save(ipv6: bool) -> Result<String> {
    let out = Cmd::new(program(ipv6, "-save"))
        .args(["-t", "nat"])
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (is iptables installed?)",
                program(ipv6, "-save")
            )
        })?;
    if !out.status.success() {
        return Err(anyhow!(
            "{} failed: {}",
            program(ipv6, "-save"),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn families(ipv6: bool) -> Vec<bool> {
    if ipv6 { vec![false, true] } else { vec![false] }
}

/// Installs `r` (idempotent); returns how many rules the chains hold.
pub fn apply(r: &Redirect, ipv6: bool) -> Result<usize> {
    r.check().map_err(|e| anyhow!(e))?;
    let script = install_script(r, ipv6, &save(ipv6)?);
    let restore = program(ipv6, "-restore");
    let mut child = Cmd::new(&restore)
        .args(["--noflush", "-w", "5"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {restore}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(anyhow!(
            "{restore} refused the rules: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(r.chain_rules(ipv6).len())
}

/// Removes tandem's rules (idempotent); returns how many commands it took.
pub fn clear(ipv6: bool) -> Result<usize> {
    let cmds = remove_commands(&save(ipv6)?);
    for args in &cmds {
        let out = Cmd::new(program(ipv6, ""))
            .arg("-w")
            .arg("5")
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(anyhow!(
                "{} {} failed: {}",
                program(ipv6, ""),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(cmds.len())
}

pub async fn main(cmd: Command) -> Result<u8> {
    match cmd {
        Command::Install(a) => {
            let r = Redirect {
                inbound_port: a.inbound_port,
                outbound_port: a.outbound_port,
                proxy_uid: a.proxy_uid,
                proxy_gid: a.proxy_gid,
                skip_inbound_ports: a.skip_inbound_ports,
                skip_outbound_ports: a.skip_outbound_ports,
                skip_inbound_subnets: a.skip_inbound_subnets,
                skip_outbound_subnets: a.skip_outbound_subnets,
            };
            for v6 in families(a.common.ipv6) {
                if a.common.dry_run {
                    r.check().map_err(|e| anyhow!(e))?;
                    let script = install_script(&r, v6, &save(v6).unwrap_or_default());
                    println!("# {} --noflush <<EOF\n{script}EOF", program(v6, "-restore"));
                    continue;
                }
                let n = apply(&r, v6)?;
                println!("installed {n} rules ({})", if v6 { "IPv6" } else { "IPv4" });
            }
            Ok(0)
        }
        Command::Remove(c) => {
            for v6 in families(c.ipv6) {
                if c.dry_run {
                    for args in remove_commands(&save(v6)?) {
                        println!("{} {}", program(v6, ""), args.join(" "));
                    }
                    continue;
                }
                let n = clear(v6)?;
                println!(
                    "{} ({})",
                    if n == 0 {
                        "nothing to remove"
                    } else {
                        "removed"
                    },
                    if v6 { "IPv6" } else { "IPv4" }
                );
            }
            Ok(0)
        }
        Command::Show(c) => {
            for v6 in families(c.ipv6) {
                for line in ours(&save(v6)?) {
                    println!("{line}");
                }
            }
            Ok(0)
        }
        Command::Validate { outbound_port } => validate(outbound_port),
    }
}

fn validate(port: u16) -> Result<u8> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port)).with_context(|| {
        format!("cannot listen on the outbound port {port} (is the sidecar already running? validate before starting it)")
    })?;
    let nonce = format!(
        "tandem-validate-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let answer = nonce.clone();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(answer.as_bytes());
        }
    });
    // TEST-NET-1: nothing real answers there; only the redirect can.
    let target: std::net::SocketAddr = "192.0.2.2:1404".parse().expect("address");
    let fail = |why: String| {
        eprintln!("not redirected: {why}");
        Ok(1)
    };
    let mut s = match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => return fail(format!("connecting to {target}: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut got = String::new();
    if let Err(e) = s.read_to_string(&mut got) {
        return fail(format!("reading from {target}: {e}"));
    }
    if got != nonce {
        return fail(format!("{target} answered, but not through port {port}"));
    }
    println!("redirected: a connection to {target} reached port {port}");
    Ok(0)
}
