//! The crypto ceiling: the bare cost of one certificate (parse and verify a CSR, build and
//! sign a leaf) on one core, measured in the same run as the load, so the server's
//! overhead ratio means something on any machine.

use std::time::{Duration, Instant, SystemTime};

use writ_ca::{
    AuthMethod, Caller, Csr, Error, Generation, GenerationState, KeyType, LeafRequest, Policy,
    PrivateKey, Rules, TrustDomain, TtlBounds, Validity, build_csr, sign_leaf,
};

/// Average time for one parse + verify + sign on one core, over at least `budget`.
pub fn bare_cost(ca_key: KeyType, csr_key: KeyType, budget: Duration) -> Result<Duration, Error> {
    let td = TrustDomain::parse("bench.invalid")?;
    let validity = Validity {
        root: Duration::from_secs(86400 * 30),
        intermediate: Duration::from_secs(86400 * 7),
        backdate: Duration::from_secs(10),
    };
    let generation = Generation::create(
        1,
        &td,
        ca_key,
        validity,
        GenerationState::Active,
        SystemTime::now(),
    )?;
    let id = td.workload("bench/crypto")?;
    let key = PrivateKey::generate(csr_key)?;
    let csr = build_csr(&key, &id, &[])?;
    let policy = Policy::new(td, TtlBounds::default());
    let caller = Caller {
        id,
        dns_allowed: Vec::new(),
        method: AuthMethod::Mtls,
    };
    let issuer = generation.intermediate.issuer_ref();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget || n < 10 {
        let parsed = Csr::parse(&csr)?;
        let template = policy.evaluate(&parsed, &LeafRequest::new(&caller, None, Rules::WRIT))?;
        sign_leaf(
            &template,
            &issuer,
            SystemTime::now(),
            Duration::from_secs(10),
        )?;
        n += 1;
    }
    Ok(start.elapsed() / n)
}
