//! `bindings.cron`: an input binding that triggers the app on a schedule
//! (metadata `schedule`, parsed by `tandem_config::schedule`), in UTC.
//!
//! The loop measures time with tokio's clock from a wall-clock anchor, so
//! tests can pause and advance it. Each event carries metadata `timeZone`
//! and `readTimeUTC`, and no data.

use super::*;
use std::time::Duration;
use tandem_config::schedule::Schedule;

pub struct Cron {
    schedule: Schedule,
}

impl Cron {
    pub fn new(m: &Metadata) -> Result<Self, String> {
        let text = m
            .get("schedule")
            .filter(|v| !v.is_empty())
            .ok_or("metadata `schedule` is required, e.g. \"@every 15m\" or \"0 30 * * * *\"")?;
        // Dapr's `TZ=`/`CRON_TZ=` prefix: tandem keeps schedules in UTC, so
        // only a UTC zone can be honoured.
        let mut text = text.trim();
        if let Some(rest) = text
            .strip_prefix("CRON_TZ=")
            .or_else(|| text.strip_prefix("TZ="))
        {
            let (zone, schedule) = rest.split_once(' ').unwrap_or((rest, ""));
            if !matches!(zone, "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Z") {
                return Err(format!(
                    "metadata `schedule`: time zone `{zone}` is not supported; tandem runs schedules in UTC (write the schedule in UTC, or TZ=UTC)"
                ));
            }
            text = schedule.trim();
        }
        let schedule =
            Schedule::parse(text).map_err(|e| format!("metadata `schedule` `{text}`: {e}"))?;
        Ok(Self { schedule })
    }
}

impl Binding for Cron {
    fn is_input(&self) -> bool {
        true
    }

    fn read(&self, handler: InputHandler) -> Result<SubscriptionHandle, String> {
        let schedule = self.schedule.clone();
        let task = tokio::spawn(async move {
            // Wall time as tokio's clock moves it from here on.
            let wall0 = crate::clock::now_ms();
            let t0 = tokio::time::Instant::now();
            let now_ms = move || wall0 + t0.elapsed().as_millis() as i64;
            loop {
                let now = now_ms();
                let Some(next) = schedule.next_after(now.div_euclid(1000)) else {
                    tracing::warn!("cron binding: the schedule does not fire again");
                    return;
                };
                let wait = Duration::from_millis((next * 1000 - now).max(0) as u64);
                tokio::time::sleep(wait).await;
                let event = InputEvent {
                    data: Bytes::new(),
                    metadata: Metadata::from([
                        ("timeZone".to_string(), "UTC".to_string()),
                        (
                            "readTimeUTC".to_string(),
                            crate::clock::rfc3339_utc(now_ms()),
                        ),
                    ]),
                };
                if let Err(e) = handler(event).await {
                    tracing::warn!(error = %e, "cron binding: the app did not take the trigger");
                }
            }
        });
        Ok(SubscriptionHandle::new(task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_app_is_triggered_on_schedule() {
        let cron = Cron::new(&Metadata::from([(
            "schedule".to_string(),
            "@every 2s".to_string(),
        )]))
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _h = cron
            .read(Arc::new(move |e: InputEvent| {
                let tx = tx.clone();
                Box::pin(async move {
                    tx.send(e).unwrap();
                    Ok(Bytes::new())
                })
            }))
            .unwrap();
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            let e = rx.recv().await.unwrap();
            assert_eq!(e.metadata["timeZone"], "UTC");
            assert!(e.metadata["readTimeUTC"].ends_with('Z'));
        }
        // Three firings 2 s apart on the paused clock: about 6 s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took <= Duration::from_secs(7),
            "{took:?}"
        );
    }
}
