//! What a redirected connection speaks, from its first bytes: HTTP/1,
//! HTTP/2 with prior knowledge, or opaque bytes. Pure (no I/O), so the
//! fuzz target can take it alone.

/// What a connection speaks, as far as its first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (the client preface).
    H2,
    /// Anything else, or nothing within the detection timeout.
    Opaque,
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
}
