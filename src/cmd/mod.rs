//! One module per top-level command.

pub mod agent;
pub mod agent_uninstall;
pub mod audit;
pub mod bench;
pub mod bootstrap;
pub mod bundle;
pub mod cert;
pub mod certs;
pub mod config;
pub mod healthcheck;
pub mod identity;
pub mod renew;
pub mod root;
pub mod server;
pub mod token;
pub mod x509;
