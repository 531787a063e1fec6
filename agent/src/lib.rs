//! writ's workload side: identity files, the SPIFFE Workload API, the clients that talk to
//! the CA (bootstrap, renewal) and the rotation loop of `writ agent`.
#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod files;
pub mod renew;
pub mod workload;

pub use error::Error;
