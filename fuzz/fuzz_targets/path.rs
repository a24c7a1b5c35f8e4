//! The path canonicaliser: never panics; what it gives is canonical (starts
//! with `/`, no empty, `.` or `..` segment, no encoded or raw separator,
//! no control character) and canonical again unchanged; a URI made of the
//! input is rebuilt with that path, its query kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_fuzz::path::{canonical, canonical_uri};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = canonical(text) {
        assert!(c.starts_with('/'), "{text:?} → {c:?}");
        let inner = c.trim_end_matches('/');
        for seg in inner.split('/').skip(1) {
            assert!(!seg.is_empty() || inner.is_empty(), "{text:?} → {c:?}");
            assert!(seg != "." && seg != "..", "{text:?} → {c:?}");
        }
        let lower = c.to_ascii_lowercase();
        for bad in ["%2f", "%5c", "\\", "%2e"] {
            assert!(!lower.contains(bad), "{text:?} → {c:?} holds {bad}");
        }
        assert!(!c.bytes().any(|b| b < 0x20 || b == 0x7f), "{text:?} → {c:?}");
        assert_eq!(canonical(&c).as_deref(), Ok(c.as_str()), "{text:?}");
    }
    if let Ok(uri) = text.parse::<http::Uri>() {
        match canonical_uri(&uri) {
            Ok(Some(fixed)) => {
                assert_eq!(fixed.query(), uri.query());
                assert_eq!(Ok(fixed.path().to_string()), canonical(uri.path()));
            }
            Ok(None) => assert_eq!(canonical(uri.path()).as_deref(), Ok(uri.path())),
            // Refused: a path without a canonical form, or no path at
            // all (`host:port`, a CONNECT target).
            Err(_) => assert!(uri.path_and_query().is_none() || canonical(uri.path()).is_err()),
        }
    }
});
