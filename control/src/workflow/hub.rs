//! The app's workers (`GetWorkItems` streams) and the work waiting for
//! them. Work is handed round the open streams in turn; with none open it
//! waits here (a worker's `start()` returns before its stream is open, and
//! a worker that reconnects must find its work again). Each item carries a
//! fresh completion token; an item whose stream closes before it is
//! answered goes back to the front of the queue (activities are therefore
//! run at least once), and an answer whose token is not in flight (an item
//! given out again meanwhile) is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tandem_proto::durabletask as dt;
use tokio::sync::mpsc;

/// What a work item is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Turn {
        instance: String,
    },
    Activity {
        instance: String,
        task: i32,
        generation: u64,
        /// The workflow actor type its result goes to (another app's, for
        /// an activity that app's workflow called here).
        owner: String,
    },
}

#[derive(Clone, Debug)]
pub struct Item {
    pub token: String,
    pub kind: Kind,
    pub work: Box<dt::WorkItem>,
    /// When it was first handed out (for its span and latency).
    pub since: std::time::SystemTime,
}

pub type Sink = mpsc::Sender<Result<dt::WorkItem, tonic::Status>>;

struct Worker {
    id: u64,
    tx: Sink,
}

#[derive(Default)]
struct Inner {
    workers: Vec<Worker>,
    next_worker: u64,
    rr: usize,
    queue: VecDeque<Item>,
    /// token → (worker, item).
    in_flight: HashMap<String, (u64, Item)>,
}

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

impl Inner {
    /// Gives queued work to workers while any will take it.
    fn pump(&mut self) {
        while let Some(item) = self.queue.pop_front() {
            if let Err(item) = self.give(item) {
                self.queue.push_front(item);
                return;
            }
        }
    }

    fn give(&mut self, mut item: Item) -> Result<(), Item> {
        let n = self.workers.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            let w = &self.workers[i];
            let mut work = item.work.clone();
            work.completion_token = item.token.clone();
            match w.tx.try_send(Ok(*work)) {
                Ok(()) => {
                    self.rr = (i + 1) % n;
                    let id = w.id;
                    self.in_flight.insert(item.token.clone(), (id, item));
                    return Ok(());
                }
                Err(_) => continue,
            }
        }
        item.work.completion_token.clear();
        Err(item)
    }
}

impl Hub {
    /// A worker's stream opened: it gets the waiting work.
    pub fn connect(&self, tx: Sink) -> u64 {
        let mut g = self.inner.lock().expect("hub lock");
        g.next_worker += 1;
        let id = g.next_worker;
        g.workers.push(Worker { id, tx });
        g.pump();
        id
    }

    /// A worker's stream closed: what it held and did not answer is given
    /// out again, first.
    pub fn disconnect(&self, worker: u64) {
        let mut g = self.inner.lock().expect("hub lock");
        g.workers.retain(|w| w.id != worker);
        let mut back: Vec<Item> = Vec::new();
        g.in_flight.retain(|_, (w, item)| {
            if *w == worker {
                back.push(item.clone());
                false
            } else {
                true
            }
        });
        back.sort_by(|a, b| a.token.cmp(&b.token));
        for item in back.into_iter().rev() {
            g.queue.push_front(item);
        }
        g.pump();
    }

    pub fn workers(&self) -> usize {
        self.inner.lock().expect("hub lock").workers.len()
    }

    /// Hands out a work item (or queues it).
    pub fn dispatch(&self, item: Item) {
        let mut g = self.inner.lock().expect("hub lock");
        g.pump();
        if g.queue.is_empty() {
            if let Err(item) = g.give(item) {
                g.queue.push_back(item);
            }
        } else {
            g.queue.push_back(item);
        }
    }

    /// Takes the item a completion answers (`None`: not in flight).
    pub fn complete(&self, token: &str) -> Option<Item> {
        let mut g = self.inner.lock().expect("hub lock");
        let found = g.in_flight.remove(token).map(|(_, i)| i);
        g.pump();
        found
    }

    /// Takes the in-flight item an answer without a completion token is
    /// for (older SDKs, the JS one among them, send none): the one turn
    /// of its instance, or the activity of its instance and task.
    pub fn complete_untokened(&self, instance: &str, task: Option<i32>) -> Option<Item> {
        let mut g = self.inner.lock().expect("hub lock");
        let token = g
            .in_flight
            .iter()
            .find(|(_, (_, i))| match (&i.kind, task) {
                (Kind::Turn { instance: x }, None) => x == instance,
                (
                    Kind::Activity {
                        instance: x,
                        task: t,
                        ..
                    },
                    Some(task),
                ) => x == instance && *t == task,
                _ => false,
            })
            .map(|(t, _)| t.clone())?;
        let found = g.in_flight.remove(&token).map(|(_, i)| i);
        g.pump();
        found
    }

    /// Whether work of `kind` is waiting or in flight.
    pub fn holds(&self, kind: &Kind) -> bool {
        let g = self.inner.lock().expect("hub lock");
        g.queue.iter().any(|i| &i.kind == kind)
            || g.in_flight.values().any(|(_, i)| &i.kind == kind)
    }

    /// Forgets every item of an instance of the workflow actor type
    /// `owner` (it finished or was purged): their answers are then dropped.
    pub fn forget(&self, instance: &str, owner: &str) {
        let of = |k: &Kind| match k {
            Kind::Turn { instance: i } => i == instance,
            Kind::Activity {
                instance: i,
                owner: o,
                ..
            } => i == instance && o == owner,
        };
        let mut g = self.inner.lock().expect("hub lock");
        g.queue.retain(|i| !of(&i.kind));
        g.in_flight.retain(|_, (_, i)| !of(&i.kind));
    }

    /// Forgets an instance's turn (its actor was let go: the load that
    /// comes next hands a turn out again); its activities stay out.
    pub fn forget_turn(&self, instance: &str) {
        let of = |k: &Kind| matches!(k, Kind::Turn { instance: i } if i == instance);
        let mut g = self.inner.lock().expect("hub lock");
        g.queue.retain(|i| !of(&i.kind));
        g.in_flight.retain(|_, (_, i)| !of(&i.kind));
    }

    /// Items waiting for a worker and given out, for the metadata API.
    pub fn sizes(&self) -> (usize, usize) {
        let g = self.inner.lock().expect("hub lock");
        (g.queue.len(), g.in_flight.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(t: &str) -> Item {
        Item {
            token: t.into(),
            kind: Kind::Turn { instance: t.into() },
            work: Box::default(),
            since: std::time::SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn work_waits_for_a_worker_and_comes_back_when_it_goes() {
        let hub = Hub::default();
        hub.dispatch(item("a"));
        hub.dispatch(item("b"));
        assert_eq!(hub.sizes(), (2, 0));
        let (tx, mut rx) = mpsc::channel(8);
        let w = hub.connect(tx);
        assert_eq!(rx.recv().await.unwrap().unwrap().completion_token, "a");
        assert_eq!(rx.recv().await.unwrap().unwrap().completion_token, "b");
        assert!(hub.complete("a").is_some());
        assert!(hub.complete("a").is_none(), "one answer per token");
        hub.disconnect(w);
        assert_eq!(hub.sizes(), (1, 0), "b was not answered: it waits again");
        let (tx2, mut rx2) = mpsc::channel(8);
        hub.connect(tx2);
        assert_eq!(rx2.recv().await.unwrap().unwrap().completion_token, "b");
        hub.forget("b", "");
        assert_eq!(hub.sizes(), (0, 0));
    }

    #[tokio::test]
    async fn a_full_worker_is_passed_over() {
        let hub = Hub::default();
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, mut rx2) = mpsc::channel(8);
        hub.connect(tx1);
        hub.connect(tx2);
        hub.dispatch(item("a"));
        hub.dispatch(item("b"));
        hub.dispatch(item("c"));
        let got: Vec<String> = [rx2.recv().await, rx2.recv().await]
            .into_iter()
            .map(|w| w.unwrap().unwrap().completion_token)
            .collect();
        assert_eq!(got, vec!["b", "c"]);
    }
}
