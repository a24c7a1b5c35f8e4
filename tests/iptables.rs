//! `tandem iptables` in a real network namespace made by the test (as
//! root, with real iptables): the dry run changes nothing, install is
//! idempotent, a redirected connection reaches the outbound port while the
//! excluded uid, loopback and skipped ports go where they were sent,
//! remove restores direct traffic and can run twice.

mod common;

use common::netns::{Netns, text};

const INSTALL: &[&str] = &[
    "install",
    "--inbound-port",
    "15006",
    "--outbound-port",
    "15001",
    "--proxy-uid",
    "2102",
    "--skip-outbound-ports",
    "5432,6379",
    "--skip-inbound-ports",
    "3500,50001,9090",
    "--skip-outbound-subnets",
    "10.98.0.0/16",
];

#[test]
fn rules_install_idempotently_redirect_and_come_off_again() {
    let (ns, _outside) = Netns::pair("ipt", "");

    // A dry run prints the script and installs nothing.
    let dry = ns.tandem(&[INSTALL, &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", text(&dry));
    let script = text(&dry);
    assert!(script.contains(":TANDEM_OUTPUT - [0:0]"), "{script}");
    assert!(script.contains("--uid-owner 2102"), "{script}");
    assert!(script.contains("--to-ports 15001"), "{script}");
    assert_eq!(ns.saved(), "", "nothing installed by a dry run");

    // Before: nothing is redirected.
    let v = ns.tandem(&["validate", "--outbound-port", "15001"]);
    assert!(!v.status.success(), "{}", text(&v));
    assert!(text(&v).contains("not redirected"), "{}", text(&v));

    let first = ns.tandem(INSTALL);
    assert!(first.status.success(), "{}", text(&first));
    let after_one = ns.saved();
    assert!(after_one.contains("-A PREROUTING -p tcp"), "{after_one}");
    assert!(after_one.contains("--dports 5432,6379"), "{after_one}");
    let second = ns.tandem(INSTALL);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(ns.saved(), after_one, "installing twice changes nothing");
    let show = ns.tandem(&["show"]);
    assert_eq!(text(&show).matches("-A PREROUTING").count(), 1);

    // The app's connection to an outside address reaches the outbound port.
    let v = ns.tandem(&["validate", "--outbound-port", "15001"]);
    assert!(v.status.success(), "{}", text(&v));

    // The sidecar's own uid is not redirected (no loop): as uid 2102 the
    // same connection goes where it was sent (nowhere, in this namespace).
    let as_proxy = ns.run(
        "setpriv",
        &[
            "--reuid=2102",
            "--regid=2102",
            "--clear-groups",
            common::BIN,
            "iptables",
            "validate",
            "--outbound-port",
            "15001",
        ],
    );
    assert!(!as_proxy.status.success(), "{}", text(&as_proxy));

    // A skipped port is not redirected either: a listener on the outbound
    // port never sees a connection to port 5432.
    let skipped = ns.run(
        "python3",
        &[
            "-c",
            "import socket,sys\nl=socket.socket();l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);l.bind(('0.0.0.0',15001));l.listen();l.settimeout(1)\nc=socket.socket();c.settimeout(1)\ntry:\n  c.connect(('192.0.2.2',5432)); print('connected')\nexcept Exception as e: print('direct', e)\ntry:\n  l.accept(); print('REDIRECTED')\nexcept Exception: print('listener saw nothing')\n",
        ],
    );
    let t = text(&skipped);
    assert!(
        t.contains("listener saw nothing") && !t.contains("REDIRECTED"),
        "{t}"
    );

    // Remove restores direct traffic, and a second remove is harmless.
    let rm = ns.tandem(&["remove"]);
    assert!(rm.status.success(), "{}", text(&rm));
    assert_eq!(ns.saved(), "");
    let rm2 = ns.tandem(&["remove"]);
    assert!(rm2.status.success(), "{}", text(&rm2));
    assert!(text(&rm2).contains("nothing to remove"));
    let v = ns.tandem(&["validate", "--outbound-port", "15001"]);
    assert!(!v.status.success(), "{}", text(&v));
}

#[test]
fn bad_settings_are_refused_before_anything_runs() {
    let (ns, _outside) = Netns::pair("iptbad", "");
    for (args, says) in [
        (vec!["install"], "--proxy-uid"),
        (
            vec![
                "install",
                "--proxy-uid",
                "1",
                "--inbound-port",
                "7",
                "--outbound-port",
                "7",
            ],
            "must differ",
        ),
        (
            vec![
                "install",
                "--proxy-uid",
                "1",
                "--skip-outbound-subnets",
                "10.0.0.0/40",
            ],
            "10.0.0.0/40",
        ),
    ] {
        let out = ns.tandem(&args);
        assert!(!out.status.success());
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert_eq!(ns.saved(), "", "nothing half-installed");
}
