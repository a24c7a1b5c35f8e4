//! The access-control matcher against a plain reference: for any
//! operation patterns, verbs and request path, `check` never panics and
//! allows exactly when the first matching operation (or the default)
//! says allow. Patterns: `*` one segment, `**` any number of them.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tandem_config::{AccessControlSpec, Action, AppPolicy, OperationPolicy};
use tandem_fuzz::access::{AccessPolicy, Caller};

#[derive(Arbitrary, Debug)]
struct Input {
    operations: Vec<(String, Vec<String>, bool)>,
    default_allow: bool,
    path: String,
    verb: Option<String>,
}

fn segments(p: &str) -> Vec<&str> {
    p.split('/').filter(|s| !s.is_empty()).collect()
}

/// Glob by dynamic programming: `m[i][j]` says pattern[..i] matches
/// path[..j].
fn reference_glob(pattern: &[&str], path: &[&str]) -> bool {
    let (p, n) = (pattern.len(), path.len());
    let mut m = vec![vec![false; n + 1]; p + 1];
    m[0][0] = true;
    for i in 1..=p {
        for j in 0..=n {
            m[i][j] = match pattern[i - 1] {
                "**" => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                "*" => j > 0 && m[i - 1][j - 1],
                s => j > 0 && m[i - 1][j - 1] && path[j - 1] == s,
            };
        }
    }
    m[p][n]
}

fuzz_target!(|input: Input| {
    if input.operations.len() > 16 || input.path.len() > 4096 {
        return;
    }
    let action = |allow: bool| if allow { Action::Allow } else { Action::Deny };
    let spec = AccessControlSpec {
        default_action: Action::Deny,
        trust_domain: None,
        policies: vec![AppPolicy {
            app_id: "caller".into(),
            default_action: action(input.default_allow),
            trust_domain: None,
            namespace: None,
            operations: input
                .operations
                .iter()
                .map(|(name, verbs, allow)| OperationPolicy {
                    name: name.clone(),
                    http_verb: verbs.clone(),
                    action: action(*allow),
                })
                .collect(),
        }],
    };
    let acl = AccessPolicy::new(spec);
    let caller = Caller {
        app_id: "caller".into(),
        namespace: "default".into(),
        trust_domain: "public".into(),
    };
    let got = acl
        .check(&caller, &input.path, input.verb.as_deref())
        .is_ok();
    let path = segments(&input.path);
    let want = input
        .operations
        .iter()
        .find(|(name, verbs, _)| {
            reference_glob(&segments(name), &path)
                && (verbs.is_empty()
                    || input.verb.as_deref().is_none_or(|verb| {
                        verbs
                            .iter()
                            .any(|v| v == "*" || v.eq_ignore_ascii_case(verb))
                    }))
        })
        .map_or(input.default_allow, |(_, _, allow)| *allow);
    assert_eq!(got, want, "{input:?}");
    // A caller with no policy gets the global default (deny here).
    let stranger = Caller {
        app_id: "stranger".into(),
        ..caller
    };
    assert!(acl.check(&stranger, &input.path, None).is_err());
});
