//! The CA crate's error type.

/// Everything the CA core can refuse or fail at. Each variant says *what* was wrong so the
/// edge can map it to a precise status code and a message the user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SPIFFE ID or trust domain failed to parse.
    #[error("invalid SPIFFE ID: {0}")]
    InvalidId(String),
    /// A duration, TTL or TTL bound is malformed or out of range.
    #[error("invalid duration: {0}")]
    InvalidDuration(String),
    /// A key type mnemonic is unknown.
    #[error("unknown key type {0:?}: use one of ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096")]
    UnknownKeyType(String),
    /// The CSR is larger than allowed.
    #[error("CSR is {len} bytes; at most {max} are accepted")]
    CsrTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CSR is not a well-formed PKCS#10 request (PEM or DER).
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    /// The CSR's signature does not verify with its own public key (no proof of possession).
    #[error("CSR signature does not verify with the CSR's public key")]
    CsrSignature,
    /// The CSR's key type is not one the CA signs.
    #[error("unsupported key: {0}; accepted: ECDSA P-256, ECDSA P-384, RSA 2048-4096")]
    UnsupportedKey(String),
    /// The CSR asks for something the CA never issues (a CA certificate, an IP SAN, ...).
    #[error("CSR rejected: {0}")]
    CsrRejected(String),
    /// The CSR's identity differs from the one the caller proved.
    #[error(
        "caller proved {proven} but the CSR asks for {requested}; a caller may only obtain its own identity"
    )]
    IdentityMismatch {
        /// What the CSR asked for.
        requested: String,
        /// What the caller proved.
        proven: String,
    },
    /// A certificate names a trust domain this CA neither serves nor lists as an alias.
    #[error(
        "{id} is not in trust domain {trust_domain} or one of its aliases; this CA does not renew it (during a migration, add the old trust domain to trust_domain_aliases)"
    )]
    ForeignTrustDomain {
        /// The certificate's identity.
        id: String,
        /// This CA's trust domain.
        trust_domain: String,
    },
    /// The data directory holds a CA of another trust domain than the one configured.
    #[error(
        "this data directory holds the CA of trust domain {stored}, not {configured}: start with --trust-domain {stored}, or, to move this CA into {configured}, add --trust-domain-alias {stored} (trust_domain_aliases); or use another --data-dir"
    )]
    WrongTrustDomain {
        /// The trust domain the stored CA belongs to.
        stored: String,
        /// The trust domain the server was started with.
        configured: String,
    },
    /// The CSR names a DNS SAN the caller's credential does not grant.
    #[error("DNS name {0:?} is not granted to this caller")]
    DnsNotAllowed(String),
    /// The requested TTL exceeds the maximum and the policy rejects rather than clamps.
    #[error("requested TTL {requested}s exceeds the maximum of {max}s")]
    TtlTooLong {
        /// Requested seconds.
        requested: u64,
        /// Maximum seconds.
        max: u64,
    },
    /// The identity is on the deny list: the CA issues nothing for it, however the caller
    /// authenticated.
    #[error(
        "identity {id} is denied by the CA's administrators: no certificate is issued for it until an administrator runs `writ identity allow {id}`"
    )]
    IdentityDenied {
        /// The denied SPIFFE ID.
        id: String,
    },
    /// A certificate presented to the CA failed to parse or verify.
    #[error("certificate rejected: {0}")]
    BadCertificate(String),
    /// A private key failed to parse, generate or sign.
    #[error("key error: {0}")]
    Key(String),
    /// Building or signing a certificate failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The store failed; the operation had no effect.
    #[error("storage error: {0}")]
    Storage(String),
    /// Stored state is inconsistent or unreadable.
    #[error("stored CA state is corrupt: {0}")]
    Corrupt(String),
    /// A serial number collided with an issued one (astronomically unlikely; retried).
    #[error("serial number already used")]
    SerialReused,
    /// A root rotation step is not possible in the CA's current state (nothing prepared
    /// to activate, a generation already prepared, nothing to retire, ...).
    #[error("CA rotation: {0}")]
    Rotation(String),
    /// A rotation step was asked for before it is safe; it becomes allowed at `allowed_at`
    /// (or now with `force`).
    #[error("{what} refused until {}: {why}; pass --force to override", humantime::format_rfc3339_seconds(*.allowed_at))]
    TooEarly {
        /// The step refused.
        what: String,
        /// Why it is not safe yet.
        why: String,
        /// When it becomes allowed.
        allowed_at: std::time::SystemTime,
    },
    /// Retiring a generation would remove the root that unexpired leaves chain to.
    #[error("retiring CA generation G{generation} would break {count} certificate(s) valid until {}; wait or pass --force", humantime::format_rfc3339_seconds(*.latest))]
    LiveLeaves {
        /// The generation asked to retire.
        generation: u64,
        /// How many unexpired leaves it signed.
        count: u64,
        /// The latest notAfter among them.
        latest: std::time::SystemTime,
    },
    /// A CA offered for import (Istio `cacerts` layout) was refused; nothing changed.
    #[error("CA import refused: {0}")]
    Import(String),
    /// The active generation was imported, so writ holds no key to renew its intermediate;
    /// the operator must import a renewed CA.
    #[error("the active CA generation G{generation} was imported: writ cannot renew its intermediate, which expires at {}; import a renewed CA (prepare, activate) before then", humantime::format_rfc3339_seconds(*.not_after))]
    NotRenewable {
        /// The active generation.
        generation: u64,
        /// Its intermediate's notAfter.
        not_after: std::time::SystemTime,
    },
    /// The passphrase does not open this CA's sealed keys; nothing was changed.
    #[error(
        "the passphrase does not open this CA's keys (they were sealed with another passphrase); nothing was changed. Give the passphrase this CA was started with (--passphrase-file or WRIT_PASSPHRASE), or restore the data directory from a backup"
    )]
    WrongPassphrase,
    /// The CA's keys are sealed with a passphrase, but none was given.
    #[error(
        "this CA's private keys are encrypted with a passphrase but none was given; pass --passphrase-file FILE or set WRIT_PASSPHRASE (development mode cannot open an encrypted CA)"
    )]
    KeysSealed,
}
