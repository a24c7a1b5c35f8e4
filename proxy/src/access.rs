//! Access control on the callee (Configuration `spec.accessControl`): may
//! the calling app (app id, namespace, trust domain) call this operation
//! with this verb? The first policy for the caller decides: its first
//! operation whose name pattern and verb match, else its default action;
//! a caller without a policy gets the global default action.
//!
//! Operation names are paths: `*` stands for one segment, `**` for any
//! number of them (`/orders/*`, `/admin/**`). gRPC calls are matched by
//! their full method path, with any verb.

use tandem_config::{AccessControlSpec, Action};

/// Who is calling, as far as the callee knows.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub app_id: String,
    pub namespace: String,
    pub trust_domain: String,
}

impl Caller {
    /// From a SPIFFE id `spiffe://<td>/ns/<ns>/<app>`.
    pub fn from_spiffe(id: &str) -> Option<Self> {
        let rest = id.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, key, ns, app) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (key == "ns" && parts.next().is_none() && !app.is_empty()).then(|| Self {
            app_id: app.to_string(),
            namespace: ns.to_string(),
            trust_domain: td.to_string(),
        })
    }
}

pub struct AccessPolicy {
    spec: AccessControlSpec,
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether `path` matches `pattern`, segment by segment: `*` is any one
/// segment, `**` any number. Greedy with one resume point (the last `**`
/// seen), so at most pattern × path steps: the path comes from callers,
/// and trying every split for every `**` (as a plain recursion does) is
/// exponential in the number of `**`.
fn glob(pattern: &[&str], path: &[&str]) -> bool {
    let (mut p, mut s) = (0, 0);
    // Where to resume after the last `**`: the pattern after it, and the
    // first path segment it has not yet swallowed.
    let mut resume: Option<(usize, usize)> = None;
    while s < path.len() {
        match pattern.get(p) {
            Some(&"**") => {
                resume = Some((p + 1, s));
                p += 1;
            }
            Some(seg) if *seg == "*" || *seg == path[s] => {
                p += 1;
                s += 1;
            }
            _ => match resume {
                Some((after, swallowed)) => {
                    resume = Some((after, swallowed + 1));
                    p = after;
                    s = swallowed + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|seg| *seg == "**")
}

fn or_default<'a>(v: &'a Option<String>, default: &'a str) -> &'a str {
    v.as_deref().filter(|s| !s.is_empty()).unwrap_or(default)
}

impl AccessPolicy {
    pub fn new(spec: AccessControlSpec) -> Self {
        Self { spec }
    }

    /// `Err` says why the call is refused. `verb`: `None` for gRPC calls,
    /// which match operations whatever their verbs.
    pub fn check(
        &self,
        caller: &Caller,
        operation: &str,
        verb: Option<&str>,
    ) -> Result<(), String> {
        let ns = if caller.namespace.is_empty() {
            "default"
        } else {
            caller.namespace.as_str()
        };
        let policy = self.spec.policies.iter().find(|p| {
            p.app_id == caller.app_id
                && or_default(&p.trust_domain, "public") == caller.trust_domain
                && or_default(&p.namespace, "default") == ns
        });
        let action = match policy {
            None => self.spec.default_action.clone(),
            Some(p) => {
                let path = segments(operation);
                p.operations
                    .iter()
                    .find(|o| {
                        glob(&segments(&o.name), &path)
                            && (o.http_verb.is_empty()
                                || verb.is_none_or(|verb| {
                                    o.http_verb
                                        .iter()
                                        .any(|v| v == "*" || v.eq_ignore_ascii_case(verb))
                                }))
                    })
                    .map(|o| o.action.clone())
                    .unwrap_or_else(|| p.default_action.clone())
            }
        };
        match action {
            Action::Allow => Ok(()),
            Action::Deny => Err(format!(
                "access control policy has denied access to app id: {} operation: {operation} verb: {}",
                caller.app_id,
                verb.unwrap_or("(gRPC)")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_config::{AppPolicy, OperationPolicy};

    #[test]
    fn globs_match_segment_by_segment() {
        let g = |p: &str, s: &str| glob(&segments(p), &segments(s));
        assert!(g("/a/**", "/a"));
        assert!(g("/a/**", "/a/b/c"));
        assert!(g("/**/c", "/a/b/c"));
        assert!(g("/**/b/**/d", "/a/b/c/d"));
        assert!(!g("/**/b/**/d", "/a/b/c/e"));
        assert!(g("/a/*/c", "/a/x/c"));
        assert!(!g("/a/*/c", "/a/c"));
        assert!(!g("/a/*", "/a/b/c"));
        assert!(g("/**", "/"));
        assert!(g("/**/**", "/x"));
        assert!(!g("/a", "/a/b"));
        assert!(g("/*/**/z", "/q/z"));
    }

    /// Many `**` against a long path that does not match: a recursion
    /// trying every split takes C(path, stars) steps (here about 10^16);
    /// the greedy match takes at most pattern × path.
    #[test]
    fn many_double_stars_against_a_long_path_finish() {
        let pattern = format!("{}/z", "/**".repeat(12));
        let path = "/a".repeat(400);
        assert!(!glob(&segments(&pattern), &segments(&path)));
        assert!(glob(&segments(&pattern), &segments(&format!("{path}/z"))));
    }

    fn caller(app: &str) -> Caller {
        Caller {
            app_id: app.into(),
            namespace: "default".into(),
            trust_domain: "public".into(),
        }
    }

    #[test]
    fn policies_decide_per_caller_operation_and_verb() {
        let acl = AccessPolicy::new(AccessControlSpec {
            default_action: Action::Deny,
            trust_domain: None,
            policies: vec![AppPolicy {
                app_id: "shop".into(),
                default_action: Action::Deny,
                trust_domain: None,
                namespace: None,
                operations: vec![
                    OperationPolicy {
                        name: "/orders/*".into(),
                        http_verb: vec!["GET".into()],
                        action: Action::Allow,
                    },
                    OperationPolicy {
                        name: "/public/**".into(),
                        http_verb: vec!["*".into()],
                        action: Action::Allow,
                    },
                ],
            }],
        });
        assert!(acl.check(&caller("shop"), "/orders/7", Some("GET")).is_ok());
        assert!(
            acl.check(&caller("shop"), "/orders/7", Some("POST"))
                .is_err(),
            "verb"
        );
        assert!(
            acl.check(&caller("shop"), "/orders/7/lines", Some("GET"))
                .is_err(),
            "one segment"
        );
        assert!(
            acl.check(&caller("shop"), "/public/a/b/c", Some("DELETE"))
                .is_ok()
        );
        assert!(
            acl.check(&caller("shop"), "/admin", Some("GET")).is_err(),
            "policy default"
        );
        let e = acl
            .check(&caller("billing"), "/orders/7", Some("GET"))
            .unwrap_err();
        assert!(e.contains("billing") && e.contains("/orders/7"), "{e}");
        let other_td = Caller {
            trust_domain: "evil".into(),
            ..caller("shop")
        };
        assert!(
            acl.check(&other_td, "/orders/7", Some("GET")).is_err(),
            "trust domain"
        );
        assert_eq!(
            Caller::from_spiffe("spiffe://public/ns/default/shop"),
            Some(caller("shop"))
        );
        assert_eq!(Caller::from_spiffe("spiffe://public/shop"), None);
    }
}
