//! The lock conformance suite: every `LockStore` gives a resource to one
//! owner at a time, lets only that owner unlock it, answers Dapr's unlock
//! statuses, and frees a lease that expired while held.

use std::collections::BTreeMap;
use std::time::Duration;
use tandem_control::components::lock::{LockStore, UnlockStatus, memory::MemoryLock};

fn run_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub async fn conformance(s: &dyn LockStore) {
    let key = format!("conformance||{}", run_id());
    let long = Duration::from_secs(30);
    assert!(
        s.try_lock(&key, "alice", long).await.unwrap(),
        "free: taken"
    );
    assert!(
        !s.try_lock(&key, "bob", long).await.unwrap(),
        "held by alice: bob waits"
    );
    assert!(
        !s.try_lock(&key, "alice", long).await.unwrap(),
        "not re-entrant"
    );
    assert_eq!(
        s.unlock(&key, "bob").await.unwrap(),
        UnlockStatus::LockBelongsToOthers
    );
    assert_eq!(
        s.unlock(&key, "alice").await.unwrap(),
        UnlockStatus::Success
    );
    assert_eq!(
        s.unlock(&key, "alice").await.unwrap(),
        UnlockStatus::LockDoesNotExist,
        "unlocked twice"
    );
    assert!(s.try_lock(&key, "bob", long).await.unwrap(), "free again");
    assert_eq!(s.unlock(&key, "bob").await.unwrap(), UnlockStatus::Success);

    // A lease that runs out while held: the resource is free, and its old
    // owner can no longer unlock it.
    let short = format!("{key}-short");
    assert!(
        s.try_lock(&short, "alice", Duration::from_millis(300))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        s.try_lock(&short, "bob", long).await.unwrap(),
        "expired: bob takes it"
    );
    assert_eq!(
        s.unlock(&short, "alice").await.unwrap(),
        UnlockStatus::LockBelongsToOthers
    );
    assert_eq!(
        s.unlock(&short, "bob").await.unwrap(),
        UnlockStatus::Success
    );

    // Many owners racing for one resource: exactly one wins.
    let race = format!("{key}-race");
    let tries = (0..20).map(|i| {
        let race = race.clone();
        async move {
            s.try_lock(&race, &format!("owner-{i}"), long)
                .await
                .unwrap()
        }
    });
    let won = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1, "one winner of twenty");
}

#[tokio::test]
async fn in_memory_passes() {
    conformance(&MemoryLock::new(&BTreeMap::new()).unwrap()).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes() {
    use tandem_control::components::lock::redis::RedisLock;
    let store = RedisLock::connect(&BTreeMap::from([(
        "redisHost".to_string(),
        "127.0.0.1:6379".to_string(),
    )]))
    .await
    .expect("the machine's Redis on 6379 (scripts/services.sh starts it)");
    conformance(&store).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_down_at_start_is_refused_with_the_address() {
    use tandem_control::components::lock::redis::RedisLock;
    let e = RedisLock::connect(&BTreeMap::from([(
        "redisHost".to_string(),
        "127.0.0.1:1".to_string(),
    )]))
    .await
    .err()
    .expect("nothing listens on port 1");
    assert!(e.contains("127.0.0.1:1"), "{e}");
}
