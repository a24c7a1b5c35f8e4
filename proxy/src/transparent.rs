//! The pieces of transparent mode below HTTP: where a redirected
//! connection was going (`SO_ORIGINAL_DST`, v4 and v6), what it speaks
//! (one bounded peek: HTTP/1, HTTP/2 prior knowledge, or opaque bytes), and
//! the opaque path (bytes copied both ways to the original destination).
//! Routing an HTTP request to a mesh app needs the runtime and lives in
//! `tandem_control::api::transparent`.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;
use tokio::net::TcpStream;

/// What a connection speaks, as far as its first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (the client preface).
    H2,
    /// Anything else, or nothing within the detection timeout.
    Opaque,
}

/// Ports where the server speaks first (PostgreSQL, MySQL, Redis, SMTP,
/// …): waiting for the client to speak would only add the timeout.
pub const SERVER_FIRST_PORTS: &[u16] = &[21, 22, 25, 110, 143, 587, 3306, 4222, 5432, 6379, 27017];

/// The address a REDIRECTed connection was sent to. A connection that
/// was not redirected has none.
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let local = stream.local_addr()?;
    if local.is_ipv4() {
        let a = getsockopt(stream, sockopt::OriginalDst).map_err(std::io::Error::from)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            u32::from_be(a.sin_addr.s_addr).into(),
            u16::from_be(a.sin_port),
        )))
    } else {
        let a = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(std::io::Error::from)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            a.sin6_addr.s6_addr.into(),
            u16::from_be(a.sin6_port),
            a.sin6_flowinfo,
            a.sin6_scope_id,
        )))
    }
}

/// Looks at the first bytes without taking them. Never waits longer than
/// `timeout`: a client that says nothing is opaque (and keeps its
/// connection).
pub async fn detect(stream: &TcpStream, port: u16, timeout: Duration) -> Protocol {
    if SERVER_FIRST_PORTS.contains(&port) {
        return Protocol::Opaque;
    }
    let mut buf = [0u8; 24];
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(end, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Protocol::Opaque,
        };
        if n == 0 {
            return Protocol::Opaque;
        }
        match classify(&buf[..n]) {
            Some(p) => return p,
            // Not enough bytes yet to tell: wait for more, within the time.
            None => {
                if tokio::time::Instant::now() >= end {
                    return Protocol::Opaque;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `None`: these bytes are a prefix of something that could still be HTTP.
pub fn classify(bytes: &[u8]) -> Option<Protocol> {
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::H2);
    }
    // An HTTP/1 request line starts with a method token and a space.
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
    ];
    for m in METHODS {
        let k = bytes.len().min(m.len());
        if bytes[..k] == m[..k] {
            return (k == m.len()).then_some(Protocol::Http1);
        }
    }
    Some(Protocol::Opaque)
}

/// Copies bytes both ways between `client` and `dst` until both sides
/// close; half-closes are passed on.
pub async fn opaque(mut client: TcpStream, dst: SocketAddr) -> std::io::Result<(u64, u64)> {
    let mut server =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(dst)).await??;
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut server).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"GE"), None, "too short to tell");
        assert_eq!(classify(b"POST /x"), Some(Protocol::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Protocol::H2));
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02"), Some(Protocol::Opaque), "TLS");
        assert_eq!(classify(b"GETX"), Some(Protocol::Opaque));
        assert_eq!(classify(b"\0\0\0\x08"), Some(Protocol::Opaque));
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let t = std::time::Instant::now();
        let p = detect(&server, 8080, Duration::from_millis(100)).await;
        assert_eq!(p, Protocol::Opaque);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(
            detect(&server, 5432, Duration::from_secs(5)).await,
            Protocol::Opaque
        );
        // Not redirected: no original destination.
        assert!(original_dst(&server).is_err());
    }
}
