//! App health: whether the app answers its health probe. With
//! `--enable-app-health-check` a loop probes every interval and flips to
//! unhealthy after `threshold` consecutive failures; without it the app is
//! healthy once its port accepts. Consumers (subscriptions, input bindings,
//! invocation) watch the state.

use crate::app_channel::AppChannel;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct AppHealth {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for AppHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl AppHealth {
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn set(&self, healthy: bool) {
        self.tx.send_if_modified(|h| {
            let changed = *h != healthy;
            *h = healthy;
            changed
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Probes until the task is dropped. The first success marks the app
    /// healthy; `threshold` consecutive failures mark it unhealthy.
    pub async fn probe_loop(
        self,
        channel: Arc<AppChannel>,
        path: String,
        interval: Duration,
        timeout: Duration,
        threshold: u32,
    ) {
        let mut failures = 0u32;
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if channel.probe(&path, timeout).await {
                failures = 0;
                if !self.is_healthy() {
                    tracing::info!("app is healthy");
                }
                self.set(true);
            } else {
                failures = failures.saturating_add(1);
                if failures >= threshold.max(1) && self.is_healthy() {
                    tracing::warn!(
                        failures,
                        "app is unhealthy: health probe failed {failures} times in a row"
                    );
                    self.set(false);
                }
            }
        }
    }
}
