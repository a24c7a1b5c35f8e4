//! Load balancing across the instances of one app: the power of two
//! choices over a peak-sensitive moving average of latency, weighted by the
//! requests in flight (as linkerd does). Two instances are drawn at random
//! and the one with the lower cost gets the request; an instance with no
//! measurements yet costs nothing, so new instances are tried at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How fast old latencies are forgotten.
const DECAY: Duration = Duration::from_secs(10);

#[derive(Default, Clone, Copy)]
struct Load {
    /// Moving average of latency, µs.
    ewma: f64,
    in_flight: u32,
    updated: Option<Instant>,
}

#[derive(Default)]
pub struct Balancer {
    loads: Mutex<HashMap<SocketAddr, Load>>,
}

/// Marks a request in flight to one instance; `done` records its latency.
pub struct InFlight<'a> {
    balancer: &'a Balancer,
    addr: SocketAddr,
    started: Instant,
    finished: bool,
}

impl InFlight<'_> {
    pub fn done(mut self) {
        self.finish(true);
    }

    fn finish(&mut self, measured: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut loads = self.balancer.loads.lock().expect("balancer lock");
        let load = loads.entry(self.addr).or_default();
        load.in_flight = load.in_flight.saturating_sub(1);
        if measured {
            let rtt = self.started.elapsed().as_secs_f64() * 1e6;
            let now = Instant::now();
            load.ewma = match load.updated {
                None => rtt,
                // Peaks count at once; calm returns slowly.
                Some(_) if rtt > load.ewma => rtt,
                Some(at) => {
                    let w = (-now.duration_since(at).as_secs_f64() / DECAY.as_secs_f64()).exp();
                    load.ewma * w + rtt * (1.0 - w)
                }
            };
            load.updated = Some(now);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Cancelled or failed: no latency to learn from.
        self.finish(false);
    }
}

fn random_below(n: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % n as u128) as usize
}

impl Balancer {
    fn cost(&self, addr: &SocketAddr) -> f64 {
        let loads = self.loads.lock().expect("balancer lock");
        loads
            .get(addr)
            .map_or(0.0, |l| l.ewma * f64::from(l.in_flight + 1))
    }

    /// The index of the instance to use among `addrs` (not empty).
    pub fn pick(&self, addrs: &[SocketAddr]) -> usize {
        if addrs.len() < 2 {
            return 0;
        }
        let a = random_below(addrs.len());
        let mut b = random_below(addrs.len() - 1);
        if b >= a {
            b += 1;
        }
        if self.cost(&addrs[b]) < self.cost(&addrs[a]) {
            b
        } else {
            a
        }
    }

    pub fn start(&self, addr: SocketAddr) -> InFlight<'_> {
        self.loads
            .lock()
            .expect("balancer lock")
            .entry(addr)
            .or_default()
            .in_flight += 1;
        InFlight {
            balancer: self,
            addr,
            started: Instant::now(),
            finished: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_instance_wins_once_both_are_known() {
        let b = Balancer::default();
        let (fast, slow): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let addrs = [fast, slow];
        let f = b.start(fast);
        f.done();
        let s = b.start(slow);
        std::thread::sleep(Duration::from_millis(20));
        s.done();
        for _ in 0..50 {
            assert_eq!(addrs[b.pick(&addrs)], fast);
        }
        // Requests piling up on the fast one shift the choice.
        let busy: Vec<_> = (0..100_000).map(|_| b.start(fast)).collect();
        assert_eq!(addrs[b.pick(&addrs)], slow);
        drop(busy);
        assert_eq!(
            addrs[b.pick(&addrs)],
            fast,
            "dropped requests leave no trace"
        );
    }
}
