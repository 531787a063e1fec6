//! One module per top-level command.

pub mod bundle;
pub mod cert;
pub mod certs;
pub mod renew;
pub mod server;
pub mod x509;
