//! prost decoding of every request message writ's gRPC services accept (the CA API, Istio's
//! CA API, the admin API and the SPIFFE Workload API), over arbitrary bytes.
//!
//! Invariants: never panics; a decoded message re-encodes to bytes that decode to an
//! equal message and re-encode identically; CSRs carried by `Sign` and `Mint` go through
//! the same strict `Csr::parse` the server applies (Istio's PEM string too).
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use writ_proto::istio::v1::auth::IstioCertificateRequest;
use writ_proto::{admin, v1, workload};

fuzz_target!(|data: &[u8]| {
    if let Some(m) = round_trip::<v1::SignRequest>(data) {
        let _ = writ_ca::Csr::parse(&m.csr);
    }
    round_trip::<v1::GetBundleRequest>(data);
    if let Some(m) = round_trip::<IstioCertificateRequest>(data) {
        let _ = writ_ca::Csr::parse(m.csr.as_bytes());
    }

    if let Some(m) = round_trip::<admin::MintRequest>(data) {
        let _ = writ_ca::Csr::parse(&m.csr);
        let _ = writ_ca::SpiffeId::parse(&m.spiffe_id);
    }
    round_trip::<admin::ListCertificatesRequest>(data);
    round_trip::<admin::StatusRequest>(data);
    if let Some(m) = round_trip::<admin::CreateTokenRequest>(data) {
        let _ = writ_ca::SpiffeId::parse(&m.spiffe_id);
    }
    round_trip::<admin::ListTokensRequest>(data);
    round_trip::<admin::RevokeTokenRequest>(data);
    if let Some(m) = round_trip::<admin::IdentityDenyRequest>(data) {
        let _ = writ_ca::SpiffeId::parse(&m.spiffe_id);
    }
    if let Some(m) = round_trip::<admin::IdentityAllowRequest>(data) {
        let _ = writ_ca::SpiffeId::parse(&m.spiffe_id);
    }
    round_trip::<admin::IdentityListRequest>(data);
    round_trip::<admin::AuditListRequest>(data);

    round_trip::<workload::X509svidRequest>(data);
    round_trip::<workload::X509BundlesRequest>(data);
    round_trip::<workload::JwtBundlesRequest>(data);
    round_trip::<workload::JwtsvidRequest>(data);
    round_trip::<workload::ValidateJwtsvidRequest>(data);
});

/// Decodes `data` as `M`; when it decodes, checks encode → decode → encode is stable.
fn round_trip<M: Message + Default + PartialEq + Debug>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    let bytes = m.encode_to_vec();
    assert_eq!(
        bytes.len(),
        m.encoded_len(),
        "encoded_len disagrees with encode"
    );
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, m, "decode(encode(m)) != m");
    assert_eq!(again.encode_to_vec(), bytes, "re-encoding is not stable");
    Some(m)
}
