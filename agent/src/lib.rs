//! writ's workload side: identity files, the SPIFFE Workload API, the clients that talk to
//! the CA (bootstrap, renewal) and the rotation loop of `writ agent`.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod client;
pub mod clock;
pub mod config;
mod error;
pub mod files;
mod hook;
pub mod lifetime;
pub mod lock;
mod metrics;
pub mod platform;
pub mod renew;
pub mod rotation;
pub mod schedule;
pub mod servers;
pub mod status;
pub mod uninstall;
pub mod watch;
pub mod workload;

pub use error::Error;
