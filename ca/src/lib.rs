//! writ's certificate authority core: SPIFFE identity types, key types, CSR parsing and
//! policy, leaf and CA issuance, CA generations, the trust bundle, key sealing, the audit
//! record format, and the [`store::Store`] trait durable state goes through.
//!
//! Nothing here touches the network or a file, starts a thread or reads the clock: every
//! "now" is an argument. The policy and signing paths are synchronous and pure, so they
//! are tested without a runtime; `writ-store` implements the trait, the server wraps the
//! core with gRPC and timers.
#![forbid(unsafe_code)]

pub mod audit;
mod authority;
mod bundle;
mod csr;
mod deny;
mod error;
mod generation;
mod import;
mod issuer;
mod key;
mod policy;
pub mod seal;
mod spiffe;
pub mod store;
pub mod ttl;
mod verify;
pub mod x509;

pub use authority::{
    Authority, CaSettings, Flushed, GenerationSummary, Issuance, NextStep, RecentLeaf,
    RecentLeaves, RotationAction, Unsynced,
};
pub use bundle::TrustBundle;
pub use csr::{Csr, MAX_CSR_LEN, OtherSan, build_bare_csr, build_csr};
pub use deny::DeniedIdentity;
pub use error::Error;
pub use generation::{CaCert, Generation, GenerationState, Validity};
pub use issuer::{Issued, IssuerRef, sign_leaf};
pub use key::{CaSigningKey, KeyType, PrivateKey};
pub use policy::{
    AuthMethod, Caller, LeafRequest, LeafTemplate, Policy, Rules, SanMode, is_dns_name,
};
pub use spiffe::{SpiffeId, TrustDomain};
pub use ttl::{LifetimeLimit, OverMax, Ttl, TtlBounds};
pub use verify::{ALGORITHMS, Usage, VerifiedPeer, verify_chain};
pub use x509::CertInfo;
