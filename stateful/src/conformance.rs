//! The conformance suite every engine passes: storing, replacing,
//! reading, deleting and listing jobs per owner, and claims — one holder
//! per due tick, leases that lapse, settles that a newer version ignores.
//! Engines call [`run`] from their tests.

use crate::engine::{Engine, EngineError, Owner, Settle};
use crate::job::Job;

fn job(name: &str, schedule: &str) -> Job {
    Job {
        name: name.into(),
        schedule: Some(schedule.into()),
        ..Job::default()
    }
}

/// Runs the suite against two handles on one store (two sidecars).
pub async fn run(a: &dyn Engine, b: &dyn Engine) {
    let app = Owner {
        namespace: "default".into(),
        app_id: format!("conformance-{}", std::process::id()),
    };
    let other = Owner {
        namespace: "other".into(),
        app_id: app.app_id.clone(),
    };
    a.delete_prefix(&app, "").await.unwrap();
    a.delete_prefix(&other, "").await.unwrap();

    // Put, get, overwrite, refuse.
    let j = job("one", "@every 1s");
    a.put(&app, &j, 1_000, None, false).await.unwrap();
    assert_eq!(b.get(&app, "one").await.unwrap(), Some(j.clone()));
    assert_eq!(
        b.get(&other, "one").await.unwrap(),
        None,
        "owners are apart"
    );
    let e = b
        .put(&app, &job("one", "@every 2s"), 1_000, None, false)
        .await;
    assert!(matches!(e, Err(EngineError::Exists(_))), "{e:?}");
    assert_eq!(a.get(&app, "one").await.unwrap(), Some(j));
    let j2 = job("one", "@every 2s");
    b.put(&app, &j2, 2_000, None, true).await.unwrap();
    assert_eq!(a.get(&app, "one").await.unwrap(), Some(j2));

    // Names with LIKE's own characters are taken literally.
    for n in ["pre_1", "pre%2", "pre\\3", "prefix", "zz"] {
        a.put(&app, &job(n, "@every 1s"), 5_000, None, false)
            .await
            .unwrap();
    }
    assert_eq!(a.delete_prefix(&app, "pre_").await.unwrap(), 1);
    assert_eq!(a.delete_prefix(&app, "pre%").await.unwrap(), 1);
    assert_eq!(a.delete_prefix(&app, "pre\\").await.unwrap(), 1);
    let names: Vec<String> = a
        .list(&app)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, ["one", "prefix", "zz"]);
    a.delete(&app, "zz").await.unwrap();
    a.delete(&app, "zz").await.unwrap();
    a.delete(&app, "prefix").await.unwrap();

    // Claims: due jobs only, one holder each, earliest first.
    a.put(&app, &job("two", "@every 1s"), 1_500, None, false)
        .await
        .unwrap();
    a.put(&app, &job("later", "@every 1s"), 9_000, Some(60_000), false)
        .await
        .unwrap();
    assert_eq!(a.next_due(&app).await.unwrap(), Some(1_500));
    let got = a.claim(&app, "a", 3_000, 1_000, 10).await.unwrap();
    let names: Vec<&str> = got.iter().map(|c| c.job.name.as_str()).collect();
    assert_eq!(names, ["two", "one"]);
    assert_eq!(
        (got[0].due, got[0].ticks, got[0].attempts, got[0].expires),
        (1_500, 0, 0, None)
    );
    assert_eq!(got[0].lease_until, 4_000, "claimed at 3,000 for 1,000 ms");
    assert!(
        b.claim(&app, "b", 3_000, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased to a"
    );
    // The lease lapses: b takes them (a sidecar that died holding them).
    let again = b.claim(&app, "b", 4_000, 1_000, 1).await.unwrap();
    assert_eq!(again.len(), 1, "limit");
    assert_eq!(again[0].job.name, "two");
    // a's settle is stale now; b's counts.
    let stale = got.iter().find(|c| c.job.name == "two").unwrap();
    a.settle(
        &app,
        "two",
        stale.token,
        Settle::Next {
            next: None,
            ticks: 1,
        },
    )
    .await
    .unwrap();
    assert!(
        b.get(&app, "two").await.unwrap().is_some(),
        "a stale settle deleted it"
    );
    b.settle(
        &app,
        "two",
        again[0].token,
        Settle::Retry {
            at: 4_500,
            attempts: 1,
        },
    )
    .await
    .unwrap();
    let retry = a.claim(&app, "a", 4_500, 1_000, 10).await.unwrap();
    let two = retry.iter().find(|c| c.job.name == "two").unwrap();
    assert_eq!((two.due, two.attempts), (4_500, 1));
    a.settle(
        &app,
        "two",
        two.token,
        Settle::Next {
            next: Some(5_500),
            ticks: 1,
        },
    )
    .await
    .unwrap();
    let next = b.claim(&app, "b", 5_500, 1_000, 10).await.unwrap();
    let two = next.iter().find(|c| c.job.name == "two").unwrap();
    assert_eq!((two.due, two.ticks, two.attempts), (5_500, 1, 0));
    // Replaced while claimed: the claim's settle changes nothing.
    a.put(&app, &job("two", "@every 5s"), 20_000, None, true)
        .await
        .unwrap();
    b.settle(
        &app,
        "two",
        two.token,
        Settle::Next {
            next: None,
            ticks: 2,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        a.get(&app, "two")
            .await
            .unwrap()
            .unwrap()
            .schedule
            .as_deref(),
        Some("@every 5s")
    );
    // Done: deleted.
    let one = a.claim(&app, "a", 20_000, 1_000, 10).await.unwrap();
    let later = one.iter().find(|c| c.job.name == "later").unwrap();
    assert_eq!(later.expires, Some(60_000));
    for c in &one {
        a.settle(
            &app,
            &c.job.name,
            c.token,
            Settle::Next {
                next: None,
                ticks: 1,
            },
        )
        .await
        .unwrap();
    }
    assert!(a.list(&app).await.unwrap().is_empty(), "{one:?}");
    assert_eq!(a.next_due(&app).await.unwrap(), None);
    assert_eq!(a.delete_prefix(&app, "").await.unwrap(), 0);

    // Deleted and made anew while claimed: the old claim's token never
    // matches the new job, however many times that one is claimed.
    a.put(&app, &job("fresh", "@every 1s"), 30_000, None, false)
        .await
        .unwrap();
    let old = a.claim(&app, "a", 30_000, 1_000, 10).await.unwrap();
    assert_eq!(old.len(), 1);
    a.delete(&app, "fresh").await.unwrap();
    b.put(&app, &job("fresh", "@every 3s"), 30_000, None, false)
        .await
        .unwrap();
    let new = b.claim(&app, "b", 31_000, 1_000, 10).await.unwrap();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0].token, old[0].token, "a token came back");
    for outcome in [
        Settle::Next {
            next: None,
            ticks: 1,
        },
        Settle::Retry {
            at: 99_000,
            attempts: 3,
        },
    ] {
        a.settle(&app, "fresh", old[0].token, outcome)
            .await
            .unwrap();
    }
    assert_eq!(
        a.get(&app, "fresh")
            .await
            .unwrap()
            .unwrap()
            .schedule
            .as_deref(),
        Some("@every 3s"),
        "a stale settle touched the new job"
    );
    b.settle(
        &app,
        "fresh",
        new[0].token,
        Settle::Next {
            next: Some(40_000),
            ticks: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(a.next_due(&app).await.unwrap(), Some(40_000));
    a.delete_prefix(&app, "").await.unwrap();
}
