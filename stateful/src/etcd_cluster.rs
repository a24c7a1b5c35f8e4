//! A real etcd cluster on loopback for tests: `n` members of Debian's
//! `etcd` (package `etcd-server`; `scripts/services.sh` installs it), each
//! on its own ports and data folder, that a test can SIGKILL and restart.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct Cluster {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

impl Cluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> Self {
        let token = format!(
            "tandem-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let dir = std::env::temp_dir().join(&token);
        std::fs::create_dir_all(&dir).expect("cannot make the etcd test folder");
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut c = Self {
            dir,
            token,
            members,
        };
        for i in 0..n {
            c.restart(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// The members' client addresses (`127.0.0.1:port`).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect()
    }

    /// SIGKILLs member `i` (its data stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again (or for the first time).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name)))
            .expect("cannot write the etcd log");
        let child = Command::new("etcd")
            .args([
                "--name",
                &m.name,
                "--data-dir",
                &self.dir.join(&m.name).to_string_lossy(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &cluster,
                "--initial-cluster-token",
                &self.token,
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start etcd ({e}): install Debian's etcd-server (scripts/services.sh does)"
                )
            });
        self.members[i].child = Some(child);
    }

    /// Waits until every running member reports a healthy cluster.
    pub fn wait_healthy(&self, timeout: Duration) {
        let start = Instant::now();
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            while !healthy(m.client) {
                assert!(
                    start.elapsed() < timeout,
                    "etcd member {} is not healthy after {timeout:?} (log in {})",
                    m.name,
                    self.dir.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// etcd's `/health`: `"health":"true"` once the member sees a leader.
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
