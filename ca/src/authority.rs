//! The certificate authority: generations, the bundle and issuance, over a [`Store`].
//!
//! Synchronous by design: the server calls it from its async handlers (sled's calls are
//! short), and tests drive it without a runtime.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use crate::generation::{StoredGeneration, Validity, unix};
use crate::issuer::sign_leaf;
use crate::store::{IssuanceRecord, Store};
use crate::ttl::{OverMax, TtlBounds};
use crate::verify::{Usage, VerifiedPeer, verify_chain};
use crate::{
    Caller, Csr, Error, Generation, GenerationState, Issued, KeyType, LeafTemplate, Policy,
    SanMode, SpiffeId, TrustBundle, TrustDomain,
};

const STATE_TREE: &str = "ca";
const STATE_KEY: &[u8] = b"state";

/// How the CA is set up; fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Key type of a newly created root and intermediate.
    pub ca_key_type: KeyType,
    /// Root lifetime (default 10 years).
    pub root_validity: Duration,
    /// Intermediate lifetime (default 30 days).
    pub intermediate_validity: Duration,
    /// Leaf TTL bounds.
    pub ttl: TtlBounds,
    /// notBefore backdating for clock skew.
    pub backdate: Duration,
    /// Bundle refresh hint advertised to clients.
    pub refresh_hint: Duration,
}

impl CaSettings {
    /// Defaults for `trust_domain`: ec-p256, 10-year root, 30-day intermediate.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            ca_key_type: KeyType::EcP256,
            root_validity: Duration::from_secs(10 * 365 * 24 * 3600),
            intermediate_validity: Duration::from_secs(30 * 24 * 3600),
            ttl: TtlBounds::default(),
            backdate: Duration::from_secs(10),
            refresh_hint: Duration::from_secs(300),
        }
    }

    fn validity(&self) -> Validity {
        Validity {
            root: self.root_validity,
            intermediate: self.intermediate_validity,
            backdate: self.backdate,
        }
    }
}

/// The outcome of one issuance: the leaf, the chain to serve with it, and the bundle.
#[derive(Clone, Debug)]
pub struct Issuance {
    /// The leaf's facts.
    pub leaf: Issued,
    /// The chain, leaf first, then the intermediate.
    pub chain: Vec<Vec<u8>>,
    /// The identity issued.
    pub id: SpiffeId,
    /// The bundle current at issuance.
    pub bundle: TrustBundle,
}

struct State {
    generations: Vec<Generation>,
    bundle_sequence: u64,
}

impl State {
    fn active(&self) -> Result<&Generation, Error> {
        self.generations
            .iter()
            .find(|g| g.state == GenerationState::Active)
            .ok_or_else(|| Error::Corrupt("no active CA generation".into()))
    }
}

/// The CA.
pub struct Authority {
    settings: CaSettings,
    policy: Policy,
    store: Arc<dyn Store>,
    state: RwLock<State>,
}

impl Authority {
    /// Loads the CA from `store`, or creates a root and intermediate on first start.
    /// Returns whether it created them.
    pub fn open(settings: CaSettings, store: Arc<dyn Store>) -> Result<(Self, bool), Error> {
        let policy = Policy::new(settings.trust_domain.clone(), settings.ttl);
        let (state, created) = match store.get(STATE_TREE, STATE_KEY)? {
            Some(bytes) => (decode_state(&bytes, &settings.trust_domain)?, false),
            None => {
                let g = Generation::create(
                    1,
                    &settings.trust_domain,
                    settings.ca_key_type,
                    settings.validity(),
                    GenerationState::Active,
                    SystemTime::now(),
                )?;
                let state = State {
                    generations: vec![g],
                    bundle_sequence: 1,
                };
                store.put(
                    STATE_TREE,
                    STATE_KEY,
                    &encode_state(&state, &settings.trust_domain)?,
                )?;
                (state, true)
            }
        };
        Ok((
            Self {
                settings,
                policy,
                store,
                state: RwLock::new(state),
            },
            created,
        ))
    }

    /// The settings the CA runs with.
    pub fn settings(&self) -> &CaSettings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Evaluates `csr` for `caller` and, if the policy allows, signs and durably records a
    /// leaf before returning it.
    pub fn issue(
        &self,
        csr: &[u8],
        caller: &Caller,
        ttl: Option<Duration>,
        over_max: OverMax,
        mode: SanMode,
    ) -> Result<Issuance, Error> {
        let csr = Csr::parse(csr)?;
        let template = self.policy.evaluate(&csr, caller, ttl, over_max, mode)?;
        self.issue_template(&template)
    }

    /// Signs and records a leaf for an already-decided template (the server's own
    /// certificate; policy-checked requests through [`Authority::issue`]).
    pub fn issue_template(&self, template: &LeafTemplate) -> Result<Issuance, Error> {
        let state = self.read();
        let generation = state.active()?;
        let mut attempts = 0;
        let leaf = loop {
            let leaf = sign_leaf(
                template,
                &generation.intermediate.issuer_ref(),
                SystemTime::now(),
                self.settings.backdate,
            )?;
            let record = IssuanceRecord {
                serial: leaf.serial.clone(),
                spiffe_id: template.id.to_string(),
                not_before: unix(leaf.not_before),
                not_after: unix(leaf.not_after),
                fingerprint: leaf.fingerprint.clone(),
                key_type: template.key_type.mnemonic().to_owned(),
                auth: template.auth.as_str().to_owned(),
                generation: generation.id,
            };
            match self.store.record_issuance(&record) {
                Ok(()) => break leaf,
                // A 127-bit random serial colliding means a broken RNG or an attack on the
                // log; try a fresh one a few times rather than ever reusing it.
                Err(Error::SerialReused) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
        };
        let chain = vec![leaf.der.clone(), generation.intermediate.der.clone()];
        Ok(Issuance {
            leaf,
            chain,
            id: template.id.clone(),
            bundle: bundle_of(&state, &self.settings),
        })
    }

    /// The policy, for callers that need to evaluate without issuing.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> TrustBundle {
        bundle_of(&self.read(), &self.settings)
    }

    /// SHA-256 fingerprint of the active root, lowercase hex.
    pub fn root_fingerprint(&self) -> Result<String, Error> {
        Ok(self.read().active()?.root.fingerprint())
    }

    /// The active intermediate's notAfter.
    pub fn intermediate_not_after(&self) -> Result<SystemTime, Error> {
        Ok(self.read().active()?.intermediate.not_after)
    }

    /// Verifies a client's chain against the current bundle.
    pub fn verify_client(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<VerifiedPeer, Error> {
        verify_chain(chain, &self.bundle().roots, now, Usage::Client)
    }

    /// Renews the active intermediate when less than half its lifetime, or less than twice
    /// the maximum leaf TTL, remains, so leaves always get their full TTL. Returns whether
    /// it renewed.
    pub fn renew_intermediate_if_due(&self, now: SystemTime) -> Result<bool, Error> {
        if now < self.intermediate_renewal_at()? {
            return Ok(false);
        }
        // Decide again under the write lock: another caller may have renewed meanwhile.
        let mut state = self.write();
        if now < self.renewal_at(&state)? {
            return Ok(false);
        }
        let td = self.settings.trust_domain.clone();
        let validity = self.settings.validity();
        let g = state
            .generations
            .iter_mut()
            .find(|g| g.state == GenerationState::Active)
            .ok_or_else(|| Error::Corrupt("no active CA generation".into()))?;
        g.renew_intermediate(&td, validity, now)?;
        self.store
            .put(STATE_TREE, STATE_KEY, &encode_state(&state, &td)?)?;
        Ok(true)
    }

    /// When the intermediate next needs renewing.
    pub fn intermediate_renewal_at(&self) -> Result<SystemTime, Error> {
        self.renewal_at(&self.read())
    }

    fn renewal_at(&self, state: &State) -> Result<SystemTime, Error> {
        let g = state.active()?;
        let lifetime = self.settings.intermediate_validity;
        let margin = (lifetime / 2).max(self.settings.ttl.max().duration() * 2);
        Ok(g.intermediate
            .not_after
            .checked_sub(margin)
            .unwrap_or(SystemTime::UNIX_EPOCH))
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated: every writer
        // builds the new value before assigning it, so a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn bundle_of(state: &State, settings: &CaSettings) -> TrustBundle {
    TrustBundle {
        trust_domain: settings.trust_domain.clone(),
        roots: state
            .generations
            .iter()
            .filter(|g| g.state != GenerationState::Retired)
            .map(|g| g.root.der.clone())
            .collect(),
        sequence: state.bundle_sequence,
        refresh_hint: settings.refresh_hint,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredState {
    version: u32,
    trust_domain: String,
    bundle_sequence: u64,
    generations: Vec<StoredGeneration>,
}

fn encode_state(state: &State, td: &TrustDomain) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let stored = StoredState {
        version: 1,
        trust_domain: td.to_string(),
        bundle_sequence: state.bundle_sequence,
        generations: state
            .generations
            .iter()
            .map(Generation::to_stored)
            .collect(),
    };
    serde_json::to_vec(&stored)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| Error::Storage(e.to_string()))
}

fn decode_state(bytes: &[u8], td: &TrustDomain) -> Result<State, Error> {
    let stored: StoredState =
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("CA state: {e}")))?;
    if stored.trust_domain != td.as_str() {
        return Err(Error::Corrupt(format!(
            "this data directory belongs to trust domain {:?}, not {td:?}; use --trust-domain {} or another --data-dir",
            stored.trust_domain, stored.trust_domain
        )));
    }
    let generations = stored
        .generations
        .iter()
        .map(Generation::from_stored)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(State {
        generations,
        bundle_sequence: stored.bundle_sequence,
    })
}
