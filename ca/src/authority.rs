//! The certificate authority: generations, the bundle and issuance, over a [`Store`].
//!
//! Synchronous by design: the server calls it from its async handlers (sled's calls are
//! short), and tests drive it without a runtime.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use crate::generation::{Validity, unix};
use crate::issuer::{IssuerRef, granted_lifetime, sign_leaf};
use crate::seal::Sealer;
use crate::store::{IssuanceRecord, Store};
use crate::ttl::{LifetimeLimit, TtlBounds};
use crate::verify::{Usage, VerifiedPeer, verify_chain};
use crate::{
    Csr, Error, Generation, GenerationState, Issued, KeyType, LeafRequest, LeafTemplate, Policy,
    SpiffeId, TrustBundle, TrustDomain,
};

mod recent;
mod rotation;
mod stored;
mod upkeep;

pub use recent::{RecentLeaf, RecentLeaves};
pub use rotation::{GenerationSummary, NextStep, RotationAction};
use stored::{STATE_KEY, STATE_TREE, decode_state, encode_state};

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
    /// How long a prepared root must have been published in the bundle before its
    /// generation may activate (without `force`), so that every peer has fetched it.
    /// Default 2 × `refresh_hint`: a peer that polls re-fetches at least once in that
    /// window even if one fetch fails. Raise it with `refresh_hint`.
    pub propagation: Duration,
    /// Trust domains this CA used to serve (a trust-domain migration): their workloads
    /// may still renew, and receive the same path in [`Self::trust_domain`]. A data
    /// directory created for an alias is adopted into the current trust domain.
    pub trust_domain_aliases: Vec<TrustDomain>,
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
            propagation: Duration::from_secs(600),
            trust_domain_aliases: Vec::new(),
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
    /// The chain, leaf first, then the intermediate, any CA certificates between it and
    /// its root (imported CAs), and, while the previous generation's root is still in the
    /// bundle, the active root cross-signed by it (so peers that only trust the old root
    /// verify the leaf).
    pub chain: Vec<Vec<u8>>,
    /// The identity issued.
    pub id: SpiffeId,
    /// The bundle current at issuance.
    pub bundle: TrustBundle,
    /// The certified key's type.
    pub key_type: crate::KeyType,
    /// The DNS names in the leaf.
    pub dns_names: Vec<String>,
    /// The lifetime granted: notAfter minus the moment of signing (notBefore is backdated).
    pub lifetime: Duration,
    /// Why `lifetime` differs from the one requested (with none requested, from the
    /// default), if it does.
    pub limited_by: Option<LifetimeLimit>,
    /// Whether the issuing generation's root is one this CA made, not an imported one: a
    /// holder of the leaf then proves the identity to this CA exactly as
    /// [`Authority::verify_client`] would find by verifying it (an imported root's own
    /// constraints are only checked on the whole path).
    pub own_root: bool,
}

/// A value whose issuance record is written but not yet durable. The only way to the value
/// is [`Unsynced::synced`], which takes the [`Flushed`] receipt of a flush made after the
/// write: no certificate can leave the CA unrecorded by forgetting to wait.
#[must_use = "an unsynced issuance must be synced and then released"]
#[derive(Debug)]
pub struct Unsynced<T>(T);

impl<T> Unsynced<T> {
    /// The value, to read from before its record is durable (never to hand out).
    pub fn peek(&self) -> &T {
        &self.0
    }

    /// The value, now that `flushed` shows its record durable. Pass the receipt of a flush
    /// that began after this value's write: [`Flushed::sync`] right after it, or a group
    /// committer's receipt for a flush that covered it.
    pub fn synced(self, _flushed: &Flushed) -> T {
        self.0
    }
}

/// The receipt of a completed [`Store::sync`]: made only by [`Flushed::sync`], it is what
/// [`Unsynced::synced`] asks for.
#[derive(Debug)]
pub struct Flushed(());

impl Flushed {
    /// Syncs `store` (everything written to it before the call becomes durable) and
    /// returns the receipt.
    pub fn sync(store: &dyn Store) -> Result<Flushed, Error> {
        store.sync()?;
        Ok(Flushed(()))
    }
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

    /// The active generation and its intermediate as the signer of leaves.
    fn active_issuer(&self) -> Result<(&Generation, IssuerRef<'_>), Error> {
        let generation = self.active()?;
        let issuer = generation
            .intermediate
            .signing_ref()
            .ok_or_else(|| Error::Corrupt("the active intermediate has no key".into()))?;
        Ok((generation, issuer))
    }

    fn in_state(&self, state: GenerationState) -> Option<&Generation> {
        self.generations.iter().find(|g| g.state == state)
    }

    fn in_state_mut(&mut self, state: GenerationState) -> Option<&mut Generation> {
        self.generations.iter_mut().find(|g| g.state == state)
    }

    fn next_id(&self) -> u64 {
        self.generations.iter().map(|g| g.id).max().unwrap_or(0) + 1
    }

    /// A deep copy (keys included) to build the next state on: a step changes the copy,
    /// persists it, and only then replaces the live state, so a refused or failed step
    /// leaves both the store and memory as they were.
    fn duplicate(&self) -> Result<State, Error> {
        Ok(State {
            generations: self
                .generations
                .iter()
                .map(|g| Generation::from_stored(&g.to_stored()))
                .collect::<Result<_, _>>()?,
            bundle_sequence: self.bundle_sequence,
        })
    }
}

/// The CA.
///
/// Single-process assumption, made here: the generations and the deny list are read from
/// the store once, at open, and afterwards changed only through this value, which writes
/// the store and then its own copy. A second process writing the same store would not be
/// seen until a reopen; several servers on one store need a reload on change.
pub struct Authority {
    settings: CaSettings,
    policy: Policy,
    store: Arc<dyn Store>,
    sealer: Sealer,
    state: RwLock<State>,
    denied: crate::deny::DenyList,
}

impl Authority {
    /// Loads the CA from `store`, or creates a root and intermediate valid from `now` on
    /// first start, with private keys stored unencrypted (development mode; see
    /// [`Authority::open_sealed`]). Returns whether it created them.
    pub fn open(
        settings: CaSettings,
        store: Arc<dyn Store>,
        now: SystemTime,
    ) -> Result<(Self, bool), Error> {
        Self::open_sealed(settings, store, Sealer::Plaintext, now)
    }

    /// Like [`Authority::open`], with private keys sealed by `sealer` (from
    /// [`crate::seal::unlock`]) whenever they are written. Keys found unencrypted while a
    /// KEK is in use (a CA started before it had a passphrase) are sealed at once.
    pub fn open_sealed(
        settings: CaSettings,
        store: Arc<dyn Store>,
        sealer: Sealer,
        now: SystemTime,
    ) -> Result<(Self, bool), Error> {
        let policy = Policy::new(settings.trust_domain.clone(), settings.ttl)
            .with_aliases(settings.trust_domain_aliases.clone());
        let (state, created) = match store.get(STATE_TREE, STATE_KEY)? {
            Some(bytes) => {
                let (state, stored_td, unsealed) = decode_state(&bytes, &settings, &sealer)?;
                if stored_td != settings.trust_domain || unsealed > 0 {
                    // Adopt a data directory of an alias into the new trust domain once,
                    // durably (keys re-sealed under it), so the migration does not depend
                    // on the alias staying configured; and seal keys stored unencrypted.
                    store.put(
                        STATE_TREE,
                        STATE_KEY,
                        &encode_state(&state, &settings.trust_domain, &sealer)?,
                    )?;
                    if unsealed > 0 {
                        tracing::warn!(
                            keys = unsealed,
                            "encrypted CA private keys that were stored unencrypted"
                        );
                    }
                }
                (state, false)
            }
            None => {
                let g = Generation::create(
                    1,
                    &settings.trust_domain,
                    settings.ca_key_type,
                    settings.validity(),
                    GenerationState::Active,
                    now,
                )?;
                let state = State {
                    generations: vec![g],
                    bundle_sequence: 1,
                };
                store.put(
                    STATE_TREE,
                    STATE_KEY,
                    &encode_state(&state, &settings.trust_domain, &sealer)?,
                )?;
                (state, true)
            }
        };
        let denied = crate::deny::DenyList::load(store.as_ref())?;
        Ok((
            Self {
                settings,
                policy,
                store,
                sealer,
                state: RwLock::new(state),
                denied,
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

    /// Evaluates `csr` for the request and, if the policy allows, signs at `now` and
    /// durably records a leaf before returning it.
    pub fn issue(
        &self,
        csr: &[u8],
        request: &LeafRequest<'_>,
        now: SystemTime,
    ) -> Result<Issuance, Error> {
        let issuance = self.issue_unsynced(csr, request, now)?;
        Ok(issuance.synced(&Flushed::sync(self.store.as_ref())?))
    }

    /// Like [`Authority::issue`], but the issuance record is not yet durable: the caller
    /// syncs the store (or waits for a committer that does) before releasing the
    /// certificate. Lets an async server sign on its own workers and share one flush
    /// among every request that arrived meanwhile.
    pub fn issue_unsynced(
        &self,
        csr: &[u8],
        request: &LeafRequest<'_>,
        now: SystemTime,
    ) -> Result<Unsynced<Issuance>, Error> {
        let csr = Csr::parse(csr)?;
        let template = self.policy.evaluate(&csr, request)?;
        self.issue_template_unsynced(&template, now)
    }

    /// Like [`Policy::evaluate`], and refuses a denied identity
    /// ([`Error::IdentityDenied`]) before anything is spent: for callers that must decide
    /// before an irreversible step (consuming a one-time token).
    pub fn evaluate(&self, csr: &Csr, request: &LeafRequest<'_>) -> Result<LeafTemplate, Error> {
        self.denied.check(&request.caller.id)?;
        self.policy.evaluate(csr, request)
    }

    /// Signs and records a leaf for an already-decided template (the server's own
    /// certificate; policy-checked requests through [`Authority::issue`]).
    ///
    /// Every certificate writ issues passes through here, so this is where the deny list
    /// is enforced: a new authentication method cannot forget it. The server's own
    /// certificate ([`AuthMethod::Internal`](crate::AuthMethod::Internal)) is exempt, so a
    /// deny can never stop the CA from serving.
    pub fn issue_template(
        &self,
        template: &LeafTemplate,
        now: SystemTime,
    ) -> Result<Issuance, Error> {
        let issuance = self.issue_template_unsynced(template, now)?;
        Ok(issuance.synced(&Flushed::sync(self.store.as_ref())?))
    }

    /// [`Authority::issue_template`] without the final sync (see
    /// [`Authority::issue_unsynced`]).
    pub fn issue_template_unsynced(
        &self,
        template: &LeafTemplate,
        now: SystemTime,
    ) -> Result<Unsynced<Issuance>, Error> {
        if template.auth != crate::AuthMethod::Internal {
            self.denied.check(&template.id)?;
        }
        let state = self.read();
        let (generation, issuer) = state.active_issuer()?;
        let mut attempts = 0;
        let leaf = loop {
            let leaf = sign_leaf(template, &issuer, now, self.settings.backdate)?;
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
            match self.store.record_issuance_unsynced(&record) {
                Ok(()) => break leaf,
                // A 127-bit random serial colliding means a broken RNG or an attack on the
                // log; try a fresh one a few times rather than ever reusing it.
                Err(Error::SerialReused) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
        };
        let (lifetime, limited_by) = granted_lifetime(template, issuer.not_after, now);
        let previous = state.in_state(GenerationState::Previous).map(|g| g.id);
        let mut chain = vec![leaf.der.clone()];
        chain.extend(generation.chain_after_leaf(previous));
        Ok(Unsynced(Issuance {
            lifetime,
            limited_by,
            key_type: template.key_type,
            leaf,
            chain,
            id: template.id.clone(),
            bundle: bundle_of(&state, &self.settings),
            dns_names: template.dns_names.clone(),
            own_root: !generation.imported,
        }))
    }

    /// Whether `id` may be issued for: [`Error::IdentityDenied`] when it is denied.
    pub fn check_allowed(&self, id: &SpiffeId) -> Result<(), Error> {
        self.denied.check(id)
    }

    /// Denies `id` durably: from now on nothing is issued for it by any path until
    /// [`Authority::allow`]. Only identities of this trust domain can be denied.
    pub fn deny(
        &self,
        id: &SpiffeId,
        reason: &str,
        now: SystemTime,
    ) -> Result<crate::DeniedIdentity, Error> {
        if !id.is_member_of(&self.settings.trust_domain) {
            return Err(Error::InvalidId(format!(
                "{id} is not in trust domain {}; this CA issues nothing for it anyway",
                self.settings.trust_domain
            )));
        }
        self.denied.deny(self.store.as_ref(), id, reason, now)
    }

    /// Lifts a deny; returns whether `id` was denied.
    pub fn allow(&self, id: &SpiffeId) -> Result<bool, Error> {
        self.denied.allow(self.store.as_ref(), id)
    }

    /// Every denied identity, ordered by ID.
    pub fn denied(&self) -> Vec<crate::DeniedIdentity> {
        self.denied.list()
    }

    /// The policy, for callers that need to evaluate without issuing.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> TrustBundle {
        bundle_of(&self.read(), &self.settings)
    }

    /// The bundle's sequence number alone: it changes whenever the roots do, so callers
    /// can key caches of verification results on it without copying the roots.
    pub fn bundle_sequence(&self) -> u64 {
        self.read().bundle_sequence
    }

    /// SHA-256 fingerprint of the active root, lowercase hex.
    pub fn root_fingerprint(&self) -> Result<String, Error> {
        Ok(self.read().active()?.root.fingerprint())
    }

    /// The active intermediate's notAfter.
    pub fn intermediate_not_after(&self) -> Result<SystemTime, Error> {
        Ok(self.read().active()?.intermediate.not_after)
    }

    /// Verifies a client's chain against the current bundle. A certificate from an alias
    /// trust domain proves the same path in the current one; any other trust domain is
    /// refused.
    pub fn verify_client(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<VerifiedPeer, Error> {
        // A chain through one of this CA's current, unexpired intermediates (every agent's
        // renewal) needs only the leaf's signature checked: the intermediate's link to its
        // root was checked when the CA made or imported it. Anything else takes the whole
        // path from the bundle's roots.
        let known = {
            let state = self.read();
            chain.get(1).and_then(|presented| {
                state
                    .generations
                    .iter()
                    // An imported root may carry name constraints the intermediate does
                    // not: those generations take the whole path.
                    .filter(|g| g.state != GenerationState::Retired && !g.imported)
                    .find(|g| g.intermediate.der == *presented && g.intermediate.not_after > now)
                    .map(|g| g.intermediate.der.clone())
            })
        };
        let mut peer = match known {
            Some(issuer) => {
                crate::verify::verify_issued_by(&chain[0], &issuer, now, Usage::Client)?
            }
            None => verify_chain(chain, &self.bundle().roots, now, Usage::Client)?,
        };
        let td = &self.settings.trust_domain;
        if !peer.id.is_member_of(td) {
            if !self
                .settings
                .trust_domain_aliases
                .iter()
                .any(|a| peer.id.is_member_of(a))
            {
                return Err(Error::ForeignTrustDomain {
                    id: peer.id.to_string(),
                    trust_domain: td.to_string(),
                });
            }
            peer.id = peer.id.with_trust_domain(td);
        }
        Ok(peer)
    }

    /// Persists `next`, then makes it the live state.
    fn commit(&self, state: &mut State, next: State) -> Result<(), Error> {
        self.store.put(
            STATE_TREE,
            STATE_KEY,
            &encode_state(&next, &self.settings.trust_domain, &self.sealer)?,
        )?;
        *state = next;
        Ok(())
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
