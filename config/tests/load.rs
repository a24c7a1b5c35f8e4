//! The resource loader against real files: multi-document YAML, scoping,
//! templating, and the errors a user sees for bad input.

use std::path::{Path, PathBuf};
use tandem_config::{LoadContext, ResourceSet, load_configuration, load_dirs, load_str};

fn ctx(app: &str) -> LoadContext {
    LoadContext {
        app_id: app.into(),
        namespace: Some("prod".into()),
    }
}

fn dir_with(files: &[(&str, &str)]) -> (tempdir::Dir, PathBuf) {
    let d = tempdir::Dir::new();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    let p = d.path().to_path_buf();
    (d, p)
}

mod tempdir {
    /// A directory under the target tmp dir, removed on drop.
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "tandem-config-test-{}-{}",
                std::process::id(),
                uuid_like()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn uuid_like() -> u128 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        t ^ u128::from(N.fetch_add(1, Ordering::Relaxed))
    }
}

const TWO_COMPONENTS: &str = "\
# two documents in one file
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: first
spec:
  type: secretstores.local.env
  version: v1
  metadata:
  - name: prefix
    value: \"{appID}-{namespace}\"
  - name: port
    value: 6379
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: second
spec:
  type: secretstores.local.file
  metadata:
  - name: secretsFile
    value: /tmp/x.json
  - name: password
    secretKeyRef:
      name: db
      key: pw
auth:
  secretStore: first
";

#[test]
fn multi_document_files_load_in_order_with_templates() {
    let (_d, p) = dir_with(&[("a.yaml", TWO_COMPONENTS)]);
    let set = load_dirs(&[p], &ctx("orders")).unwrap();
    assert_eq!(set.components.len(), 2);
    let first = &set.components[0];
    assert_eq!(first.resource.metadata.name, "first");
    assert_eq!(first.source.line, 3, "kind line of the first document");
    let items = &first.resource.spec.metadata;
    assert_eq!(
        items[0].value_string().as_deref(),
        Some("orders-prod.orders")
    );
    assert_eq!(items[1].value_string().as_deref(), Some("6379"));
    let second = &set.components[1];
    assert_eq!(second.source.line, 16);
    assert_eq!(second.resource.auth.secret_store, "first");
    assert_eq!(
        second.resource.spec.metadata[1]
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key,
        "pw"
    );
}

#[test]
fn uuid_template_gives_a_fresh_value_each_time() {
    let yaml = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: t\n  metadata:\n  - name: id\n    value: \"{uuid}/{uuid}\"\n";
    let mut set = ResourceSet::default();
    load_str(yaml, Path::new("x.yaml"), &ctx("a"), &mut set).unwrap();
    let v = set.components[0].resource.spec.metadata[0]
        .value_string()
        .unwrap();
    let (a, b) = v.split_once('/').unwrap();
    assert_eq!(a.len(), 36);
    assert_ne!(a, b);
}

#[test]
fn scopes_and_namespaces_decide_what_loads() {
    let yaml = "\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: scoped
spec:
  type: secretstores.local.env
scopes: [billing]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: elsewhere
  namespace: staging
spec:
  type: secretstores.local.env
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: ours
  namespace: prod
spec:
  type: secretstores.local.env
scopes: [orders, billing]
";
    let mut set = ResourceSet::default();
    load_str(yaml, Path::new("s.yaml"), &ctx("orders"), &mut set).unwrap();
    let names: Vec<_> = set
        .components
        .iter()
        .map(|c| c.resource.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["ours"]);
    assert_eq!(set.skipped.len(), 2);
    assert!(
        set.skipped[0].1.contains("scoped to [billing]"),
        "{:?}",
        set.skipped
    );
    assert!(
        set.skipped[1].1.contains("namespace `staging`"),
        "{:?}",
        set.skipped
    );
}

fn error_of(yaml: &str) -> String {
    let mut set = ResourceSet::default();
    load_str(yaml, Path::new("bad.yaml"), &ctx("a"), &mut set)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_misspelt_field_is_named_with_its_line() {
    let e = error_of(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: t\n  ignoreErors: true\n",
    );
    assert!(e.starts_with("bad.yaml:7:"), "{e}");
    assert!(e.contains("unknown field `ignoreErors`"), "{e}");
    assert!(
        e.contains("ignoreErrors"),
        "the expected names are listed: {e}"
    );
}

#[test]
fn malformed_yaml_points_at_the_line() {
    let e = error_of(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: [unclosed\nspec:\n  type: t\n",
    );
    assert!(e.starts_with("bad.yaml:"), "{e}");
    let line: usize = e.split(':').nth(1).unwrap().parse().unwrap();
    assert!(
        (4..=6).contains(&line),
        "line should be near the broken list: {e}"
    );
}

#[test]
fn line_numbers_count_from_the_file_not_the_document() {
    let yaml = format!(
        "{TWO_COMPONENTS}---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: third\nspec:\n  type: [1]\n"
    );
    let e = error_of(&yaml);
    assert!(e.starts_with("bad.yaml:36:"), "{e}");
    assert!(e.contains("type: [1]"), "the offending line is quoted: {e}");
}

#[test]
fn unknown_kind_and_wrong_api_version_are_explained() {
    let e = error_of("apiVersion: dapr.io/v1alpha1\nkind: Widget\nmetadata:\n  name: w\n");
    assert!(e.contains("bad.yaml:2"), "{e}");
    assert!(
        e.contains("unknown kind `Widget`") && e.contains("Component, Subscription"),
        "{e}"
    );
    let e = error_of(
        "apiVersion: dapr.io/v2\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: t\n",
    );
    assert!(
        e.contains("bad.yaml:1") && e.contains("expected dapr.io/v1alpha1"),
        "{e}"
    );
    let e = error_of("metadata:\n  name: c\n");
    assert!(e.contains("no `kind`"), "{e}");
}

#[test]
fn invalid_values_are_refused() {
    let e = error_of(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: t\n  initTimeout: soon\n",
    );
    assert!(
        e.contains("bad.yaml:7") && e.contains("invalid duration"),
        "{e}"
    );
    let e = error_of(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\nspec:\n  type: t\n  metadata:\n  - name: x\n    value: a\n    envRef: B\n",
    );
    assert!(
        e.contains("more than one of value, secretKeyRef and envRef"),
        "{e}"
    );
    let e = error_of(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: \"\"\nspec:\n  type: t\n",
    );
    assert!(e.contains("metadata.name"), "{e}");
}

#[test]
fn duplicate_names_across_files_name_both_places() {
    let c = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: same\nspec:\n  type: t\n";
    let (_d, p) = dir_with(&[("a.yaml", c), ("b.yml", c), ("ignored.txt", "not yaml")]);
    let e = load_dirs(&[p], &ctx("a")).unwrap_err().to_string();
    assert!(
        e.contains("b.yml:2") && e.contains("a.yaml:2") && e.contains("`same`"),
        "{e}"
    );
}

#[test]
fn a_missing_resources_dir_is_an_error() {
    let e = load_dirs(&[PathBuf::from("/nonexistent/tandem")], &ctx("a")).unwrap_err();
    assert!(
        e.to_string().contains("cannot read resources directory"),
        "{e}"
    );
}

#[test]
fn subscriptions_v1_and_v2() {
    let yaml = "\
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: old
spec:
  pubsubname: pubsub
  topic: orders
  route: /orders
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: new
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    rules:
    - match: event.type == \"big\"
      path: /big
    default: /small
  deadLetterTopic: dead
  bulkSubscribe:
    enabled: true
    maxMessagesCount: 10
";
    let mut set = ResourceSet::default();
    load_str(yaml, Path::new("subs.yaml"), &ctx("a"), &mut set).unwrap();
    let old = set.subscriptions[0].resource.spec.effective_routes();
    assert_eq!(old.default.as_deref(), Some("/orders"));
    let new = &set.subscriptions[1].resource.spec;
    assert_eq!(new.effective_routes().rules[0].path, "/big");
    assert_eq!(new.effective_routes().default.as_deref(), Some("/small"));
    assert_eq!(
        new.bulk_subscribe.as_ref().unwrap().max_messages_count,
        Some(10)
    );
    let e = error_of(
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: s\nspec:\n  pubsubname: p\n  topic: t\n",
    );
    assert!(e.contains("no route"), "{e}");
}

const RESILIENCY: &str = "\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: r
spec:
  policies:
    timeouts:
      fast: 500ms
    retries:
      twice:
        policy: exponential
        maxInterval: 10s
        maxRetries: 2
        matching:
          httpStatusCodes: 429,500-599
          gRPCStatusCodes: 4,14
    circuitBreakers:
      cb:
        maxRequests: 1
        timeout: 30s
        trip: consecutiveFailures > 3
  targets:
    apps:
      orders:
        timeout: fast
        retry: twice
        circuitBreaker: cb
    components:
      statestore:
        outbound:
          retry: twice
";

#[test]
fn resiliency_loads_and_its_references_are_checked() {
    let mut set = ResourceSet::default();
    load_str(RESILIENCY, Path::new("r.yaml"), &ctx("a"), &mut set).unwrap();
    let r = &set.resiliencies[0].resource.spec;
    assert_eq!(
        r.policies.timeouts["fast"].0,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(r.policies.retries["twice"].max_retries, Some(2));
    assert_eq!(
        r.targets.apps["orders"].circuit_breaker.as_deref(),
        Some("cb")
    );

    let e = error_of(&RESILIENCY.replace(
        "retry: twice\n        circuitBreaker",
        "retry: thrice\n        circuitBreaker",
    ));
    assert!(e.contains("`thrice`") && e.contains("not defined"), "{e}");
    assert!(e.starts_with("bad.yaml:26"), "points at the reference: {e}");
    let e = error_of(&RESILIENCY.replace("429,500-599", "429,600-700"));
    assert!(
        e.contains("httpStatusCodes") && e.contains("600-700"),
        "{e}"
    );
}

#[test]
fn configuration_file_is_read() {
    let (_d, p) = dir_with(&[(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  secrets:\n    scopes:\n    - storeName: s\n      defaultAccess: deny\n      allowedSecrets: [a]\n  features:\n  - name: HotReload\n    enabled: false\n  someFutureField: {x: 1}\n",
    )]);
    let c = load_configuration(&p.join("config.yaml")).unwrap();
    let scope = c.spec.secret_scope("s").unwrap();
    assert!(scope.allows("a"));
    assert!(!scope.allows("b"));
    assert!(!c.spec.feature("HotReload", true));
    assert!(c.spec.feature("Other", true));
}

#[test]
fn hostile_yaml_is_bounded() {
    // "billion laughs": each level multiplies the previous by ten.
    let mut yaml = String::from(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c\n  labels:\n    a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        yaml.push_str(&format!(
            "    a{i}: &a{i} [{}]\n",
            std::iter::repeat_n(prev.as_str(), 10)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    yaml.push_str("spec:\n  type: t\n");
    let start = std::time::Instant::now();
    let mut set = ResourceSet::default();
    let result = load_str(&yaml, Path::new("laughs.yaml"), &ctx("a"), &mut set);
    assert!(result.is_err(), "expansion must be refused");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    let e = result.unwrap_err().to_string();
    assert!(e.starts_with("laughs.yaml:") && e.contains("budget"), "{e}");
}

#[test]
fn empty_lists_written_without_a_value_are_empty() {
    // `metadata:` with nothing under it (and `scopes: ~`) is how many
    // examples write a component without settings; daprd loads them.
    for text in [
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: m\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\nscopes: ~\n",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: m\nspec:\n  type: pubsub.in-memory\n  metadata: []\n",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: m\nspec:\n  type: pubsub.in-memory\n",
    ] {
        let (_d, p) = dir_with(&[("m.yaml", text)]);
        let set = load_dirs(&[p], &ctx("orders")).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(set.components.len(), 1);
        assert!(set.components[0].resource.spec.metadata.is_empty());
    }
}

/// `tracing.otel` as daprd reads it: `headers` a `key=value,…` string
/// (values percent-decoded) or a list of items, `timeout` milliseconds or
/// a duration; bad forms are refused with what to write instead.
#[test]
fn otel_headers_and_timeout_in_daprds_forms() {
    use std::time::Duration;
    use tandem_config::load_configuration_str;
    let load = |otel: &str| {
        load_configuration_str(
            &format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  tracing:\n    otel:\n      endpointAddress: h:4317\n{otel}"
            ),
            Path::new("c.yaml"),
        )
        .map(|c| c.spec.tracing.unwrap().otel.unwrap())
        .map_err(|e| e.to_string())
    };
    let o = load("      headers: \"api-key=s3cret, team=a%2Cb,,\"\n      timeout: 2500\n").unwrap();
    assert_eq!(
        o.headers.0,
        vec![
            ("api-key".into(), "s3cret".into()),
            ("team".into(), "a,b".into())
        ]
    );
    assert_eq!(o.timeout.unwrap().0, Duration::from_millis(2500));
    let o = load("      headers:\n      - name: api-key\n        value: k\n      timeout: 3s\n")
        .unwrap();
    assert_eq!(o.headers.0, vec![("api-key".into(), "k".into())]);
    assert_eq!(o.timeout.unwrap().0, Duration::from_secs(3));
    let o = load("      timeout: \"750\"\n").unwrap();
    assert_eq!(o.timeout.unwrap().0, Duration::from_millis(750));
    assert!(load("      headers:\n").unwrap().headers.is_empty());
    for (bad, says) in [
        ("      headers: \"api-key\"\n", "is not key=value"),
        ("      headers: \"=v\"\n", "is not a header name"),
        ("      headers: \"a b=v\"\n", "is not a header name"),
        ("      headers: \"k=%zz\"\n", "bad percent-encoding"),
        ("      headers: \"k=%ff\"\n", "is not UTF-8"),
        ("      timeout: 0\n", "above zero"),
        ("      timeout: soon\n", "timeout `soon`"),
        ("      timeout: -5\n", "timeout"),
    ] {
        let e = load(bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}
