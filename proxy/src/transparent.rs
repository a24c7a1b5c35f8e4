//! The pieces of transparent mode below HTTP: where a redirected
//! connection was going (`SO_ORIGINAL_DST`, v4 and v6), what it speaks
//! (one bounded peek: HTTP/1, HTTP/2 prior knowledge, or opaque bytes), and
//! the opaque path (bytes copied both ways to the original destination).
//! Routing an HTTP request to a mesh app needs the runtime and lives in
//! `tandem_control::api::transparent`.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;
use tokio::net::TcpStream;

pub use crate::detect::{Protocol, classify};

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
