//! Bad resources at startup: the sidecar refuses to start and says which
//! file, line and field, and what to do — or, with `ignoreErrors`, starts
//! without the broken component.

mod common;

use common::{TempDir, component, sidecar};

fn start_with(files: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = TempDir::new("badres");
    for (n, t) in files {
        dir.write(n, t);
    }
    sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start_failing()
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let (status, log) = start_with(&[(
        "broken.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  type: secretstores.local.env\n  metadata: [\n",
    )]);
    assert!(!status.success());
    assert!(log.contains("broken.yaml:"), "{log}");
}

#[test]
fn unknown_component_type_lists_the_supported_ones() {
    let (status, log) = start_with(&[("c.yaml", &component("store", "state.cassandra", &[]))]);
    assert!(!status.success());
    assert!(
        log.contains("unknown component type `state.cassandra`"),
        "{log}"
    );
    assert!(
        log.contains("secretstores.local.file") && log.contains("secretstores.local.env"),
        "{log}"
    );
    assert!(log.contains("c.yaml:2"), "the definition is located: {log}");
}

#[test]
fn a_secret_reference_to_a_missing_store_is_explained() {
    let c = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: needs-secret\nspec:\n  type: secretstores.local.env\n  metadata:\n  - name: prefix\n    secretKeyRef:\n      name: p\n      key: p\nauth:\n  secretStore: vault\n";
    let (status, log) = start_with(&[("c.yaml", c)]);
    assert!(!status.success());
    assert!(
        log.contains("secret store `vault`, which is not defined"),
        "{log}"
    );
}

#[test]
fn secret_references_resolve_through_auth_secret_store() {
    let dir = TempDir::new("secretref");
    let secrets = dir.write("s.json", r#"{"prefix": "REF_"}"#);
    dir.write(
        "res/a.yaml",
        &format!(
            "{}---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: env\nspec:\n  type: secretstores.local.env\n  metadata:\n  - name: prefix\n    secretKeyRef:\n      name: prefix\n      key: prefix\nauth:\n  secretStore: files\n",
            component("files", "secretstores.local.file", &[("secretsFile", secrets.to_str().unwrap())])
        ),
    );
    let s = sidecar()
        .args(["--resources-path", dir.path().join("res").to_str().unwrap()])
        .env("REF_VALUE", "resolved")
        .start();
    // the env store got its prefix from the file store
    assert_eq!(s.get("/v1.0/secrets/env/VALUE").json()["VALUE"], "resolved");
}

#[test]
fn a_failing_component_is_fatal_unless_ignore_errors() {
    let bad = component(
        "broken",
        "secretstores.local.file",
        &[("secretsFile", "/does/not/exist.json")],
    );
    let (status, log) = start_with(&[("c.yaml", &bad)]);
    assert!(!status.success());
    assert!(
        log.contains("component `broken`") && log.contains("/does/not/exist.json"),
        "{log}"
    );

    let dir = TempDir::new("ignore");
    dir.write(
        "c.yaml",
        &format!(
            "{}---\n{}",
            bad.replace("  version: v1\n", "  version: v1\n  ignoreErrors: true\n"),
            component("ok", "secretstores.local.env", &[])
        ),
    );
    let s = sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start();
    let comps = s.get("/v1.0/metadata").json()["components"].clone();
    assert_eq!(comps.as_array().unwrap().len(), 1, "{comps}");
    assert_eq!(comps[0]["name"], "ok");
    assert!(
        s.stderr.text().contains("ignoreErrors"),
        "skipping is logged"
    );
    assert!(
        s.metrics_text().contains(
            r#"dapr_runtime_component_init_fail_total{app_id="test-app",component="broken""#
        ),
        "counted in metrics"
    );
}

#[test]
fn a_missing_resources_dir_or_config_is_refused() {
    let (status, log) = sidecar()
        .args(["--resources-path", "/no/such/dir"])
        .start_failing();
    assert!(!status.success());
    assert!(
        log.contains("/no/such/dir") && log.contains("cannot read resources directory"),
        "{log}"
    );
    let (status, log) = sidecar()
        .args(["--config", "/no/such/config.yaml"])
        .start_failing();
    assert!(!status.success());
    assert!(log.contains("/no/such/config.yaml"), "{log}");
}

#[test]
fn bad_flags_are_refused_with_the_expected_form() {
    let (status, log) = sidecar().args(["--max-body-size", "lots"]).start_failing();
    assert!(!status.success());
    assert!(
        log.contains("expected a number with an optional unit"),
        "{log}"
    );
    let (status, log) = sidecar().args(["--app-protocol", "smtp"]).start_failing();
    assert!(!status.success());
    assert!(log.contains("grpc") && log.contains("h2c"), "{log}");
}

#[test]
fn resources_for_other_apps_are_not_loaded() {
    let dir = TempDir::new("scoped");
    dir.write(
        "a.yaml",
        &format!(
            "{}scopes: [someone-else]\n",
            component("theirs", "secretstores.local.env", &[])
        ),
    );
    dir.write(
        "b.yaml",
        &format!(
            "{}scopes: [test-app]\n",
            component("ours", "secretstores.local.env", &[])
        ),
    );
    let s = sidecar()
        .args(["--resources-path", dir.path().to_str().unwrap()])
        .start();
    let comps = s.get("/v1.0/metadata").json()["components"].clone();
    assert_eq!(comps.as_array().unwrap().len(), 1, "{comps}");
    assert_eq!(comps[0]["name"], "ours");
}

#[test]
fn daprd_deprecated_flags_are_understood_and_unsupported_ones_refused() {
    let s = sidecar()
        .args(["--dapr-http-max-request-size", "1", "--enable-profiling"])
        .start();
    let r = s.request("PUT", "/v1.0/metadata/k", &vec![b'x'; (1 << 20) + 1]);
    assert_eq!(r.status, 413, "1 MB limit from the deprecated flag");
    assert_eq!(
        s.request("PUT", "/v1.0/metadata/k", &vec![b'x'; 1 << 19])
            .status,
        204
    );

    let (status, log) = sidecar()
        .args(["--unix-domain-socket", "/tmp"])
        .start_failing();
    assert!(!status.success());
    assert!(
        log.contains("--unix-domain-socket") && log.contains("not supported yet"),
        "{log}"
    );
}

#[test]
fn a_broken_circuit_breaker_expression_is_refused_not_fatal_to_the_process() {
    let (status, log) = start_with(&[(
        "r.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies:\n    circuitBreakers:\n      cb:\n        trip: consecutiveFailures >>> 3\n",
    )]);
    assert_eq!(
        status.code(),
        Some(1),
        "a clean error exit, not an abort: {log}"
    );
    assert!(
        log.contains("circuit breaker `cb`") && log.contains("not valid CEL"),
        "{log}"
    );
}
