//! One canonical form of a request path, computed at the door: what access
//! control checks, what metrics and spans name, and what the app receives.
//!
//! Made canonical: percent-encoded unreserved characters decoded (`%41` →
//! `A`), other escapes' hex upper-cased, `.` and `..` segments removed
//! (never above the root), runs of slashes merged. Refused, because no
//! canonical form exists without guessing how the app will read them (the
//! path-confusion tricks behind proxy and servlet-container advisories):
//! an encoded slash or backslash (`%2F`, `%5C`), a raw backslash, a dot
//! segment spelled with an encoded dot (`%2e%2e`), an encoded `%` hiding
//! one of those (`%252e`, `%252f`), a path parameter on a dot segment
//! (`..;x`), NUL and other control characters, and malformed escapes.
//! Envoy's `normalize_path` + `merge_slashes` +
//! `path_with_escaped_slashes_action: REJECT_REQUEST` is the same policy.

/// Why a path has no canonical form; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of one hex digit.
pub fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn refuse(path: &str, why: &str) -> PathError {
    PathError(format!("the path `{path}` {why}"))
}

/// One segment made canonical; `encoded_dot` tells whether any `.` in it
/// came from `%2e`.
fn segment(path: &str, raw: &str) -> Result<(String, bool), PathError> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut encoded_dot = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(refuse(
                    path,
                    "has a `%` that is not followed by two hex digits",
                ));
            };
            let v = h * 16 + l;
            match v {
                b'/' => {
                    return Err(refuse(
                        path,
                        "holds an encoded slash (%2F), which apps read differently; send the path without it",
                    ));
                }
                b'\\' => {
                    return Err(refuse(
                        path,
                        "holds an encoded backslash (%5C), which apps read differently",
                    ));
                }
                b'%' => {
                    // `%25` hiding a separator or a dot: `%252e`, `%252f`, `%255c`.
                    let hidden = b
                        .get(i + 3)
                        .copied()
                        .and_then(hex)
                        .zip(b.get(i + 4).copied().and_then(hex))
                        .map(|(h, l)| h * 16 + l);
                    if matches!(hidden, Some(b'/' | b'\\' | b'.')) {
                        return Err(refuse(
                            path,
                            "hides a dot or a slash behind an encoded `%` (%25); send it decoded",
                        ));
                    }
                    out.push_str("%25");
                }
                0..=0x1f | 0x7f => {
                    return Err(refuse(path, "holds an encoded control character"));
                }
                v if unreserved(v) => {
                    encoded_dot |= v == b'.';
                    out.push(v as char);
                }
                v => out.push_str(&format!("%{v:02X}")),
            }
            i += 3;
            continue;
        }
        match c {
            b'\\' => {
                return Err(refuse(
                    path,
                    "holds a backslash, which apps read differently; use `/`",
                ));
            }
            0..=0x1f | 0x7f => return Err(refuse(path, "holds a control character")),
            _ => out.push(c as char),
        }
        i += 1;
    }
    Ok((out, encoded_dot))
}

/// The canonical form of `path` (the part of a URI before `?`), always
/// starting with `/`. Canonical means stable: the form is its own
/// canonical form, so the callee's sidecar, which makes the path canonical
/// again, agrees with the caller's door. A path whose decoding spells new
/// escapes (`%252%652f`: `%65` is `e`, giving `%252f`) has none.
pub fn canonical(path: &str) -> Result<String, PathError> {
    let once = canonical_once(path)?;
    match canonical_once(&once) {
        Ok(again) if again == once => Ok(once),
        _ => Err(refuse(
            path,
            "spells an escape out of escaped characters (such as `%25%32%66`); encode each character once",
        )),
    }
}

fn canonical_once(path: &str) -> Result<String, PathError> {
    if !path.is_ascii() {
        return Err(refuse(
            path,
            "holds raw non-ASCII bytes; percent-encode them",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    let trailing = path.len() > 1 && path.ends_with('/');
    for raw in path.split('/') {
        if raw.is_empty() {
            continue;
        }
        let (seg, encoded_dot) = segment(path, raw)?;
        let bare = seg.split(';').next().unwrap_or_default();
        let is_dot = matches!(seg.as_str(), "." | "..");
        if !is_dot && matches!(bare, "." | "..") {
            return Err(refuse(
                path,
                "puts a path parameter (`;`) on a dot segment (`..;`), which apps read differently",
            ));
        }
        if is_dot && encoded_dot {
            return Err(refuse(
                path,
                "spells a dot segment with an encoded dot (%2e); send `..` or nothing",
            ));
        }
        match seg.as_str() {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    let mut s = format!("/{}", out.join("/"));
    if trailing && s.len() > 1 {
        s.push('/');
    }
    Ok(s)
}

/// Whether `path` is canonical as it stands — the common case, checked
/// without building anything (every request passes here): it starts with
/// `/`, holds no escape, backslash or control character, no empty segment
/// (`//`) and no segment starting with a dot, so no step of `canonical`
/// could change or refuse it.
fn already_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    b.first() == Some(&b'/')
        && !b
            .iter()
            .any(|&c| matches!(c, b'%' | b'\\') || !(0x20..0x7f).contains(&c))
        && !b.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// `uri` with its path made canonical (query kept as it is); `None` when it
/// already was.
pub fn canonical_uri(uri: &http::Uri) -> Result<Option<http::Uri>, PathError> {
    if uri.path_and_query().is_none() {
        // `host:port` alone (authority form): a CONNECT target, no path.
        return Err(PathError(format!(
            "the request target `{uri}` has no path; send an origin-form target such as `/method`"
        )));
    }
    let path = uri.path();
    if already_canonical(path) {
        return Ok(None);
    }
    let canonical = canonical(path)?;
    if canonical == path {
        return Ok(None);
    }
    let pq = match uri.query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|e| PathError(format!("the path `{path}` cannot be rebuilt: {e}")))?,
    );
    http::Uri::from_parts(parts)
        .map(Some)
        .map_err(|e| PathError(format!("the path `{path}` cannot be rebuilt: {e}")))
}

#[cfg(test)]
mod tests {
    use super::canonical;

    /// Found by the `path` fuzz target: decoding `%65` made `%252e` (an
    /// encoded `%` hiding a dot), which the callee's sidecar then refused
    /// while the caller's door had let it through. Refused at the door.
    #[test]
    fn escapes_spelled_with_escapes_are_refused() {
        for p in ["/a/!%252%652p", "/a/%25%32%65%25%32%65/x", "/%25%32%66etc"] {
            let e = canonical(p).unwrap_err();
            assert!(e.0.contains("escaped characters"), "{p}: {e}");
        }
        // Escapes of plain characters that spell nothing stay accepted.
        assert_eq!(canonical("/%25%36%31").unwrap(), "/%2561");
    }

    /// Found by the `path` fuzz target: a target in authority form
    /// (`host:port`) has no path to make canonical; it is refused with a
    /// message, not rebuilt into something that fails later.
    #[test]
    fn a_target_without_a_path_is_refused_with_a_reason() {
        let uri: http::Uri = "hh:80&q".parse().unwrap();
        let e = super::canonical_uri(&uri).unwrap_err();
        assert!(e.0.contains("has no path"), "{e}");
        let uri: http::Uri = "/a/../b?x=%2e".parse().unwrap();
        assert_eq!(
            super::canonical_uri(&uri).unwrap().unwrap().to_string(),
            "/b?x=%2e"
        );
    }

    #[test]
    fn canonical_forms() {
        for (raw, want) in [
            ("/a/b", "/a/b"),
            ("", "/"),
            ("/", "/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../../etc/passwd", "/etc/passwd"),
            ("/public/../admin", "/admin"),
            ("/%41%62c", "/Abc"),
            ("/%7euser", "/~user"),
            ("/a%20b", "/a%20b"),
            ("/a%3ab", "/a%3Ab"),
            ("/dir/", "/dir/"),
            ("/a;v=1/b", "/a;v=1/b"),
            ("/100%25", "/100%25"),
            ("/.well-known/x", "/.well-known/x"),
            ("/...", "/..."),
        ] {
            assert_eq!(canonical(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    /// The shortcut agrees with the full computation.
    #[test]
    fn the_shortcut_only_skips_what_is_already_canonical() {
        for p in ["/a/b", "/", "/a;v=1/b", "/dir/", "/a.b/c.", "/x~y_z-1"] {
            assert!(super::already_canonical(p), "{p}");
            assert_eq!(canonical(p).as_deref(), Ok(p));
        }
        for p in [
            "",
            "a",
            "//a",
            "/a/./b",
            "/.well-known",
            "/%41",
            "/a\\b",
            "/caf\u{e9}",
            "/a\tb",
        ] {
            assert!(!super::already_canonical(p), "{p}");
        }
    }

    /// The path-confusion tricks: each refused, with a message.
    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in [
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/public/.%2e/admin",
            "/public/%2e/admin",
            "/public/..%2fadmin",
            "/public%2f..%2fadmin",
            "/public/..%5cadmin",
            "/public/..\\admin",
            "/public/%252e%252e/admin",
            "/public/%252fadmin",
            "/public/..;/admin",
            "/public/.;x/admin",
            "/a%00b",
            "/a%0d%0aSet-Cookie:x",
            "/a%zz",
            "/a%4",
            "/caf\u{e9}",
        ] {
            let e = canonical(raw).expect_err(raw);
            assert!(e.0.contains("path"), "{raw}: {e}");
        }
    }
}
