//! tandem's stateful runtime: the durable job scheduler and the
//! coordination engines it runs on (SQLite on one host, etcd across
//! hosts), with actors and workflows to build on them. It depends on the
//! configuration model and the generated etcd client only, never on the API
//! layer: `control` translates the wire to calls here.

pub mod conformance;
pub mod engine;
pub mod etcd;
#[cfg(any(test, feature = "test-cluster"))]
pub mod etcd_cluster;
mod etcd_placement;
pub mod job;
pub mod placement;
pub mod scheduler;
pub mod shared_sqlite;
pub mod sqlite;
pub mod times;
