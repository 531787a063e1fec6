//! writ's gRPC protocols, generated from `proto/` at build time with protox (no system
//! `protoc`).
//!
//! - [`v1`]: the public CA API (`writ.v1.Ca`).
//! - [`admin`]: the admin API, served only on the local Unix socket.
//! - [`workload`]: the SPIFFE Workload API (no proto package, as the standard requires).
//! - [`istio`]: Istio's `IstioCertificateService`, served beside [`v1`] on the same port.
//!
//! Beside them, what every writ endpoint speaks the same way: the message codec
//! ([`codec`]), write coalescing under HTTP/2 ([`coalesce`]) and the TLS cipher-suite
//! preference ([`tls`]); and the one protocol that is not gRPC, the bundle push channel
//! ([`push`]).
#![forbid(unsafe_code)]

pub mod coalesce;
pub mod codec;
pub mod push;
pub mod tls;

/// Generated code, nested as the proto packages are so cross-package paths resolve.
pub mod writ {
    /// `writ.v1`.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("writ.v1");
    }
    /// `writ.admin`.
    pub mod admin {
        /// `writ.admin.v1`.
        pub mod v1 {
            #![allow(missing_docs, clippy::all)]
            tonic::include_proto!("writ.admin.v1");
        }
    }
}

/// Istio's CA protocol, for wire compatibility with istio-agent and ztunnel.
pub mod istio {
    /// `istio.v1`.
    pub mod v1 {
        /// `istio.v1.auth`.
        pub mod auth {
            #![allow(missing_docs, clippy::all)]
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

pub use writ::admin::v1 as admin;
pub use writ::v1;

/// The SPIFFE Workload API.
pub mod workload {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("_");
}

/// The metadata key and value every Workload API call must carry.
pub const WORKLOAD_SECURITY_HEADER: (&str, &str) = ("workload.spiffe.io", "true");
