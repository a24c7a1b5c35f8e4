//! Generated Rust types for the Dapr gRPC contract (`dapr.proto.common.v1`,
//! `dapr.proto.runtime.v1`, `dapr.proto.sentry.v1`) and for the part of
//! etcd's KV API that the etcd coordination engine speaks. Only generated
//! code lives here, so the slow protobuf build is compiled once and shared by `proxy` (app callbacks) and
//! `control` (the Dapr API server).
#![allow(clippy::all, clippy::pedantic)]

pub mod common {
    pub mod v1 {
        tonic::include_proto!("dapr.proto.common.v1");
    }
}

pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("dapr.proto.runtime.v1");
    }
}

pub mod sentry {
    pub mod v1 {
        tonic::include_proto!("dapr.proto.sentry.v1");
    }
}

/// OTLP trace export (our own subset of the protocol).
pub mod otlp {
    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
}

/// etcd's v3 KV service (`etcdserverpb.KV`), the client side of the etcd
/// coordination engine.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// The durabletask workflow protocol (`TaskHubSidecarService`), spoken by
/// the Dapr workflow SDKs on the sidecar's gRPC port. Its `.proto` has no
/// package, so prost files it under `_`.
pub mod durabletask {
    tonic::include_proto!("_");
}
