//! Network namespaces made by a test (as root): an "app host" and an
//! "outside host" joined by a veth pair, 10.99.0.1 ↔ 10.99.0.2, each with
//! its default route over the pair. Deleted on drop.

use std::process::{Child, Command, Output, Stdio};

pub struct Netns {
    pub name: String,
}

impl Netns {
    fn bare(name: String) -> Self {
        // A namespace left by a killed run of the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ns = Netns { name };
        ns.ip(&["netns", "add", &ns.name], false);
        ns.ip(&["link", "set", "lo", "up"], true);
        ns
    }

    fn ip(&self, args: &[&str], inside: bool) {
        let mut cmd = Command::new("ip");
        if inside {
            cmd.args(["-n", &self.name]);
        }
        let out = cmd.args(args).output().expect("iproute2");
        assert!(
            out.status.success(),
            "ip {args:?}: {} (network namespace tests need root)",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Two hosts joined by a veth pair: (app host 10.99.0.1, outside host
    /// 10.99.0.2). `hosts`: lines for the app host's /etc/hosts.
    pub fn pair(tag: &str, hosts: &str) -> (Netns, Netns) {
        let id = std::process::id();
        let app = Netns::bare(format!("tdm-{tag}-a-{id}"));
        let out = Netns::bare(format!("tdm-{tag}-o-{id}"));
        app.ip(
            &[
                "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &out.name,
            ],
            true,
        );
        for (ns, dev, addr) in [(&app, "v0", "10.99.0.1/24"), (&out, "v1", "10.99.0.2/24")] {
            ns.ip(&["addr", "add", addr, "dev", dev], true);
            ns.ip(&["link", "set", dev, "up"], true);
            ns.ip(&["route", "add", "default", "dev", dev], true);
        }
        // `ip netns exec` shows /etc/netns/<name>/hosts as /etc/hosts.
        let dir = format!("/etc/netns/{}", app.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            format!("{dir}/hosts"),
            format!("127.0.0.1 localhost\n{hosts}"),
        )
        .unwrap();
        (app, out)
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().unwrap()
    }

    /// A background process in the namespace, its output discarded.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Child {
        self.command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn tandem(&self, args: &[&str]) -> Output {
        self.run(super::BIN, &[&["iptables"][..], args].concat())
    }

    /// Our nat rules as iptables-save prints them, without counters.
    pub fn saved(&self) -> String {
        let out = self.run("iptables-save", &["-t", "nat"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("TANDEM"))
            .map(|l| l.split(" [").next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
