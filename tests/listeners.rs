//! Listeners bound what a client can hold: a connection that sends half a
//! request head, or nothing, is closed after the head timeout (10 s, as
//! daprd) on the HTTP API and on the internal port that faces the network;
//! an accept loop out of descriptors pauses instead of spinning, and
//! serves again once descriptors are free.

mod common;

use common::{BIN, free_port, http};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the server closed the connection (a non-blocking look: an
/// answer such as a 408 followed by the close counts too).
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut s = s;
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn half_sent_and_silent_connections_are_closed_after_the_head_timeout() {
    let internal = free_port();
    let s = common::sidecar()
        .app_id("slowloris")
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .start();
    let mut conns = Vec::new();
    for i in 0..150 {
        let port = if i % 3 == 2 { internal } else { s.http };
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if i % 3 == 0 {
            c.write_all(b"GET /v1.0/hea").unwrap();
        }
        conns.push(c);
    }
    std::thread::sleep(Duration::from_secs(5));
    let still_open = conns.iter().filter(|c| !closed(c)).count();
    assert_eq!(still_open, conns.len(), "nothing is cut before the timeout");
    std::thread::sleep(Duration::from_secs(7));
    let still_open: Vec<usize> = conns
        .iter()
        .enumerate()
        .filter(|(_, c)| !closed(c))
        .map(|(i, _)| i)
        .collect();
    assert!(
        still_open.is_empty(),
        "still open after 12 s: {still_open:?}"
    );
    assert_eq!(
        http(s.http, "GET", "/v1.0/healthz/outbound", &[], b"")
            .unwrap()
            .status,
        204
    );
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) … utime(11) stime(12).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn an_accept_loop_out_of_descriptors_pauses_and_recovers() {
    let home = common::TempDir::new("emfile");
    let port = free_port();
    // A descriptor limit low enough for a few dozen connections to exhaust.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 96; exec {BIN} sidecar --app-id emfile --dapr-http-port {port} --dapr-grpc-port {} --metrics-port {}",
            free_port(),
            free_port()
        ))
        .env("TANDEM_HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while http(port, "GET", "/v1.0/healthz/outbound", &[], b"")
        .map(|r| r.status)
        .ok()
        != Some(204)
    {
        assert!(Instant::now() < end, "the sidecar did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each kept connection costs the sidecar a descriptor; open until it
    // refuses more (the kernel still completes the TCP handshake).
    let mut held = Vec::new();
    for _ in 0..200 {
        match TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        ) {
            Ok(mut c) => {
                let _ = c.write_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n");
                held.push(c);
            }
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child.id()) - before;
    // A spinning loop burns ~200 ticks (2 s of a core); pausing, almost none.
    assert!(
        used < 50,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );
    drop(held);
    let end = Instant::now() + Duration::from_secs(15);
    while http(port, "GET", "/v1.0/healthz/outbound", &[], b"")
        .map(|r| r.status)
        .ok()
        != Some(204)
    {
        assert!(
            Instant::now() < end,
            "the sidecar serves again once descriptors are free"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn one_address_cannot_hold_more_than_its_share_of_the_internal_port() {
    let internal = free_port();
    let s = common::sidecar()
        .app_id("greedy")
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .start();
    let conns: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", internal)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let open = conns.iter().filter(|c| !closed(c)).count();
    assert_eq!(
        open, 256,
        "the cap per address (256) holds; the rest are closed at once"
    );
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    let c = TcpStream::connect(("127.0.0.1", internal)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !closed(&c),
        "a connection is served again once the others are gone"
    );
    assert_eq!(
        http(s.http, "GET", "/v1.0/healthz/outbound", &[], b"")
            .unwrap()
            .status,
        204
    );
}
