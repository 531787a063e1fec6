//! The certificate authority: generations, the bundle and issuance, over a [`Store`].
//!
//! Synchronous by design: the server calls it from its async handlers (sled's calls are
//! short), and tests drive it without a runtime.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use crate::generation::{StoredGeneration, Validity, unix, whole_seconds};
use crate::issuer::sign_leaf;
use crate::seal::Sealer;
use crate::store::{IssuanceRecord, Store};
use crate::ttl::{OverMax, TtlBounds};
use crate::verify::{Usage, VerifiedPeer, verify_chain};
use crate::{
    Caller, Csr, Error, Generation, GenerationState, Issued, KeyType, LeafTemplate, Policy,
    SanMode, SpiffeId, TrustBundle, TrustDomain,
};

mod recent;

pub use recent::{RecentLeaf, RecentLeaves};

const STATE_TREE: &str = "ca";
const STATE_KEY: &[u8] = b"state";
/// 2 added rotation: the `previous` state, optional keys (imported roots, retired
/// generations), imported chains and cross-signed roots. 3 added sealed keys
/// (`sealed_key`), which an older writ would mistake for absent keys. Earlier states load
/// as is.
const STATE_VERSION: u32 = 3;

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
    /// Whether the issuing generation's root is one this CA made, not an imported one: a
    /// holder of the leaf then proves the identity to this CA exactly as
    /// [`Authority::verify_client`] would find by verifying it (an imported root's own
    /// constraints are only checked on the whole path).
    pub own_root: bool,
}

/// A value whose issuance record is written but not yet durable. [`Unsynced::synced`]
/// releases it: call it only after [`Store::sync`] returned (or a committer that calls it
/// reported this write durable), so no certificate leaves the CA unrecorded.
#[must_use = "an unsynced issuance must be synced and then released"]
#[derive(Debug)]
pub struct Unsynced<T>(T);

impl<T> Unsynced<T> {
    /// The value, once its record is durable.
    pub fn synced(self) -> T {
        self.0
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

/// One CA generation as an operator sees it (`Authority::status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationSummary {
    /// Generation number.
    pub id: u64,
    /// Where it is in its life.
    pub state: GenerationState,
    /// The intermediate's key type.
    pub key_type: KeyType,
    /// SHA-256 of the root, lowercase hex.
    pub root_fingerprint: String,
    /// The root's notAfter.
    pub root_not_after: SystemTime,
    /// The current intermediate's notAfter.
    pub intermediate_not_after: SystemTime,
    /// Unexpired leaves it signed, from the issuance log.
    pub live_leaves: u64,
    /// The latest notAfter among them.
    pub latest_leaf_not_after: Option<SystemTime>,
    /// When it entered its state.
    pub since: SystemTime,
    /// Imported rather than created by writ.
    pub imported: bool,
    /// Whether its root is cross-signed by its predecessor's.
    pub cross_signed: bool,
}

/// A rotation step an operator can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationAction {
    /// Make the prepared generation sign ([`Authority::activate`]).
    Activate,
    /// Take the previous generation's root out of the bundle ([`Authority::retire`]).
    Retire,
}

/// The next rotation step pending, and when it becomes allowed without `force`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextStep {
    /// What to do.
    pub action: RotationAction,
    /// The generation it applies to.
    pub generation: u64,
    /// When it is allowed without `force`.
    pub allowed_at: SystemTime,
}

/// Unexpired leaves per generation: (count, latest notAfter).
type LiveLeaves = std::collections::HashMap<u64, (u64, SystemTime)>;

/// The CA.
pub struct Authority {
    settings: CaSettings,
    policy: Policy,
    store: Arc<dyn Store>,
    sealer: Sealer,
    state: RwLock<State>,
    denied: crate::deny::DenyList,
}

impl Authority {
    /// Loads the CA from `store`, or creates a root and intermediate on first start, with
    /// private keys stored unencrypted (development mode; see [`Authority::open_sealed`]).
    /// Returns whether it created them.
    pub fn open(settings: CaSettings, store: Arc<dyn Store>) -> Result<(Self, bool), Error> {
        Self::open_sealed(settings, store, Sealer::Plaintext)
    }

    /// Like [`Authority::open`], with private keys sealed by `sealer` (from
    /// [`crate::seal::unlock`]) whenever they are written. Keys found unencrypted while a
    /// KEK is in use (a CA started before it had a passphrase) are sealed at once.
    pub fn open_sealed(
        settings: CaSettings,
        store: Arc<dyn Store>,
        sealer: Sealer,
    ) -> Result<(Self, bool), Error> {
        let policy = Policy::new(settings.trust_domain.clone(), settings.ttl);
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
                    SystemTime::now(),
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
        let issuance = self.issue_unsynced(csr, caller, ttl, over_max, mode)?;
        self.store.sync()?;
        Ok(issuance.synced())
    }

    /// Like [`Authority::issue`], but the issuance record is not yet durable: the caller
    /// syncs the store (or waits for a committer that does) before releasing the
    /// certificate. Lets an async server sign on its own workers and share one flush
    /// among every request that arrived meanwhile.
    pub fn issue_unsynced(
        &self,
        csr: &[u8],
        caller: &Caller,
        ttl: Option<Duration>,
        over_max: OverMax,
        mode: SanMode,
    ) -> Result<Unsynced<Issuance>, Error> {
        let csr = Csr::parse(csr)?;
        let template = self.policy.evaluate(&csr, caller, ttl, over_max, mode)?;
        self.issue_template_unsynced(&template)
    }

    /// Like [`Policy::evaluate`], and refuses a denied identity
    /// ([`Error::IdentityDenied`]) before anything is spent: for callers that must decide
    /// before an irreversible step (consuming a one-time token).
    pub fn evaluate(
        &self,
        csr: &Csr,
        caller: &Caller,
        ttl: Option<Duration>,
        over_max: OverMax,
        mode: SanMode,
    ) -> Result<LeafTemplate, Error> {
        self.denied.check(&caller.id)?;
        self.policy.evaluate(csr, caller, ttl, over_max, mode)
    }

    /// Signs and records a leaf for an already-decided template (the server's own
    /// certificate; policy-checked requests through [`Authority::issue`]).
    ///
    /// Every certificate writ issues passes through here, so this is where the deny list
    /// is enforced: a new authentication method cannot forget it. The server's own
    /// certificate ([`AuthMethod::Internal`](crate::AuthMethod::Internal)) is exempt, so a
    /// deny can never stop the CA from serving.
    pub fn issue_template(&self, template: &LeafTemplate) -> Result<Issuance, Error> {
        let issuance = self.issue_template_unsynced(template)?;
        self.store.sync()?;
        Ok(issuance.synced())
    }

    /// [`Authority::issue_template`] without the final sync (see
    /// [`Authority::issue_unsynced`]).
    pub fn issue_template_unsynced(
        &self,
        template: &LeafTemplate,
    ) -> Result<Unsynced<Issuance>, Error> {
        if template.auth != crate::AuthMethod::Internal {
            self.denied.check(&template.id)?;
        }
        let state = self.read();
        let generation = state.active()?;
        let issuer = generation
            .intermediate
            .signing_ref()
            .ok_or_else(|| Error::Corrupt("the active intermediate has no key".into()))?;
        let mut attempts = 0;
        let leaf = loop {
            let leaf = sign_leaf(template, &issuer, SystemTime::now(), self.settings.backdate)?;
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
        let previous = state.in_state(GenerationState::Previous).map(|g| g.id);
        let mut chain = vec![leaf.der.clone()];
        chain.extend(generation.chain_after_leaf(previous));
        Ok(Unsynced(Issuance {
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

    /// Renews the active intermediate when less than half its lifetime, or less than twice
    /// the maximum leaf TTL, remains, so leaves always get their full TTL. Returns whether
    /// it renewed.
    ///
    /// Only the active generation renews. An imported one cannot (writ holds no key for
    /// its root): before it is due this returns `Ok(false)`, after it
    /// [`Error::NotRenewable`], so the operator is warned to import a renewed CA.
    pub fn renew_intermediate_if_due(&self, now: SystemTime) -> Result<bool, Error> {
        if now < self.renewal_at(&self.read())? {
            return Ok(false);
        }
        // Decide again under the write lock: another caller may have renewed meanwhile.
        let mut state = self.write();
        if now < self.renewal_at(&state)? {
            return Ok(false);
        }
        let td = self.settings.trust_domain.clone();
        let validity = self.settings.validity();
        let mut next = state.duplicate()?;
        next.in_state_mut(GenerationState::Active)
            .ok_or_else(|| Error::Corrupt("no active CA generation".into()))?
            .renew_intermediate(&td, validity, now)?;
        self.commit(&mut state, next)?;
        Ok(true)
    }

    /// When the intermediate next needs renewing. For an imported active generation,
    /// which writ cannot renew, [`Error::NotRenewable`].
    pub fn intermediate_renewal_at(&self) -> Result<SystemTime, Error> {
        let state = self.read();
        let g = state.active()?;
        if g.imported {
            return Err(Error::NotRenewable {
                generation: g.id,
                not_after: g.intermediate.not_after,
            });
        }
        self.renewal_at(&state)
    }

    fn renewal_at(&self, state: &State) -> Result<SystemTime, Error> {
        Ok(self.renewal_due(state.active()?))
    }

    fn renewal_due(&self, g: &Generation) -> SystemTime {
        let lifetime = self.settings.intermediate_validity;
        let margin = (lifetime / 2).max(self.settings.ttl.max().duration() * 2);
        g.intermediate
            .not_after
            .checked_sub(margin)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Starts a root rotation: creates generation N+1 (root and intermediate of
    /// `key_type`, default the settings' `ca_key_type`) and publishes its root in the
    /// bundle beside the current one (the bundle sequence increments). Nothing is signed
    /// with it until [`Authority::activate`]. Refused while a prepared or previous
    /// generation exists.
    pub fn prepare(
        &self,
        key_type: Option<KeyType>,
        now: SystemTime,
    ) -> Result<GenerationSummary, Error> {
        let id = {
            let state = self.read();
            can_prepare(&state)?;
            state.next_id()
        };
        // Key generation (RSA above all) happens outside the write lock, so issuance goes on.
        let g = Generation::create(
            id,
            &self.settings.trust_domain,
            key_type.unwrap_or(self.settings.ca_key_type),
            self.settings.validity(),
            GenerationState::Prepared,
            now,
        )?;
        self.add_prepared(g)
    }

    /// Plugs in an externally issued CA (Istio's `cacerts` layout: `ca-cert.pem` the
    /// intermediate writ will sign with, `ca-key.pem` its key (PKCS#8, PKCS#1 or SEC1), `cert-chain.pem` the
    /// chain from it up to the root, `root-cert.pem` the root) as a new prepared
    /// generation, which then activates and retires like any other. Every check (key
    /// matches certificate, certificate is a CA, chain verifies to the root, CA valid and
    /// outliving the maximum leaf TTL, subject reproducible) happens before any change:
    /// a refusal ([`Error::Import`]) leaves the CA as it was.
    pub fn import(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        chain_pem: &[u8],
        root_pem: &[u8],
        now: SystemTime,
    ) -> Result<GenerationSummary, Error> {
        let id = {
            let state = self.read();
            can_prepare(&state)?;
            state.next_id()
        };
        let g = crate::import::import_generation(
            id,
            crate::import::CaFiles {
                cert_pem,
                key_pem,
                chain_pem,
                root_pem,
            },
            &self.settings,
            now,
        )?;
        self.add_prepared(g)
    }

    fn add_prepared(&self, g: Generation) -> Result<GenerationSummary, Error> {
        let mut state = self.write();
        can_prepare(&state)?;
        if state.next_id() != g.id {
            return Err(Error::Rotation(
                "another generation was prepared meanwhile".into(),
            ));
        }
        let mut next = state.duplicate()?;
        next.generations.push(g);
        next.bundle_sequence += 1;
        self.commit(&mut state, next)?;
        let g = state
            .generations
            .last()
            .ok_or_else(|| Error::Corrupt("no generations".into()))?;
        Ok(summary(g, &LiveLeaves::new()))
    }

    /// Makes the prepared generation sign new leaves; the active one becomes
    /// [`GenerationState::Previous`] (no longer signing, root still in the bundle).
    /// The new root is cross-signed by the old one and served in every new chain, so
    /// peers that have not yet fetched the new bundle still verify new leaves. Refused
    /// until the prepared root has been published for `propagation`, unless `force`.
    pub fn activate(&self, force: bool, now: SystemTime) -> Result<GenerationSummary, Error> {
        let mut state = self.write();
        let prepared = state.in_state(GenerationState::Prepared).ok_or_else(|| {
            Error::Rotation("no prepared CA generation to activate; prepare one first".into())
        })?;
        if let Some(p) = state.in_state(GenerationState::Previous) {
            return Err(Error::Rotation(format!(
                "generation G{} is still previous; retire it first",
                p.id
            )));
        }
        let allowed_at = prepared.since + self.settings.propagation;
        if now < allowed_at && !force {
            return Err(Error::TooEarly {
                what: format!("activating CA generation G{}", prepared.id),
                why: format!(
                    "its root has been in the bundle only since {}, and peers need {} to fetch it",
                    humantime::format_rfc3339_seconds(prepared.since),
                    humantime::format_duration(self.settings.propagation)
                ),
                allowed_at,
            });
        }
        // writ renews its own intermediates, not an imported one: one about to expire
        // would sign only truncated leaves, then none.
        let max_ttl = self.settings.ttl.max().duration();
        if prepared.imported && prepared.intermediate.not_after < now + max_ttl {
            return Err(Error::Rotation(format!(
                "the imported intermediate of G{} expires at {}, sooner than a leaf of the maximum TTL would; import a renewed CA instead",
                prepared.id,
                humantime::format_rfc3339_seconds(prepared.intermediate.not_after)
            )));
        }
        let active = state.active()?;
        let (new_id, old_id) = (prepared.id, active.id);
        let cross = prepared.cross_sign(active, self.settings.backdate, now)?;
        let mut next = state.duplicate()?;
        let renew = {
            let p = next
                .in_state_mut(GenerationState::Prepared)
                .ok_or_else(|| Error::Corrupt("prepared generation vanished".into()))?;
            !p.imported && now >= self.renewal_due(p)
        };
        for g in &mut next.generations {
            if g.id == old_id {
                g.state = GenerationState::Previous;
                g.since = whole_seconds(now);
            } else if g.id == new_id {
                g.state = GenerationState::Active;
                g.since = whole_seconds(now);
                g.cross_signed = cross.clone().map(|der| (old_id, der));
                // A generation prepared long ago gets a fresh intermediate now rather
                // than signing short leaves until the renewal loop notices.
                if renew {
                    g.renew_intermediate(
                        &self.settings.trust_domain,
                        self.settings.validity(),
                        now,
                    )?;
                }
            }
        }
        self.commit(&mut state, next)?;
        let live = self.live_leaves(now)?;
        let g = state.active()?;
        Ok(summary(g, &live))
    }

    /// Ends a rotation: the previous generation's root leaves the bundle (the sequence
    /// increments) and its keys are erased. Refused while unexpired leaves it signed
    /// exist ([`Error::LiveLeaves`]), unless `force`.
    pub fn retire(&self, force: bool, now: SystemTime) -> Result<GenerationSummary, Error> {
        let mut state = self.write();
        let previous = state.in_state(GenerationState::Previous).ok_or_else(|| {
            Error::Rotation("no previous CA generation to retire; activate one first".into())
        })?;
        let id = previous.id;
        let live = self.live_leaves(now)?;
        if let Some(&(count, latest)) = live.get(&id)
            && !force
        {
            return Err(Error::LiveLeaves {
                generation: id,
                count,
                latest,
            });
        }
        if let Some(allowed_at) = self.archived_leaves_until().filter(|t| *t > now)
            && !force
        {
            return Err(Error::TooEarly {
                what: format!("retiring CA generation G{id}"),
                why: "audit segments were archived whose certificates may still be valid (the CA cannot count them)".into(),
                allowed_at,
            });
        }
        let mut next = state.duplicate()?;
        for g in &mut next.generations {
            if g.id == id {
                g.state = GenerationState::Retired;
                g.since = whole_seconds(now);
                g.forget_keys();
            }
        }
        next.bundle_sequence += 1;
        self.commit(&mut state, next)?;
        let g = state
            .generations
            .iter()
            .find(|g| g.id == id)
            .ok_or_else(|| Error::Corrupt("retired generation vanished".into()))?;
        Ok(summary(g, &live))
    }

    /// Every generation, oldest first, with its unexpired leaves at `now`.
    pub fn status(&self, now: SystemTime) -> Result<Vec<GenerationSummary>, Error> {
        let live = self.live_leaves(now)?;
        Ok(self
            .read()
            .generations
            .iter()
            .map(|g| summary(g, &live))
            .collect())
    }

    /// The pending rotation step, if a rotation is under way, and when it is allowed
    /// without `force`: activating a prepared generation once its root has propagated,
    /// retiring a previous one once the last leaf it signed has expired.
    pub fn next_step(&self, now: SystemTime) -> Result<Option<NextStep>, Error> {
        let live = self.live_leaves(now)?;
        let state = self.read();
        if let Some(p) = state.in_state(GenerationState::Prepared) {
            return Ok(Some(NextStep {
                action: RotationAction::Activate,
                generation: p.id,
                allowed_at: p.since + self.settings.propagation,
            }));
        }
        let archived = self.archived_leaves_until();
        Ok(state.in_state(GenerationState::Previous).map(|p| NextStep {
            action: RotationAction::Retire,
            generation: p.id,
            allowed_at: live
                .get(&p.id)
                .map_or(p.since, |&(_, latest)| latest)
                .max(archived.unwrap_or(p.since)),
        }))
    }

    /// When archived audit segments were moved out of the store, the latest a certificate
    /// they record can expire: issued before the oldest record left, within the longest
    /// TTL.
    fn archived_leaves_until(&self) -> Option<SystemTime> {
        let before = self.store.archived_before()?;
        Some(
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(before)
                + self.settings.ttl.max().duration(),
        )
    }

    /// Every CA certificate in the bundle or served in chains, named, with its notAfter:
    /// for expiry warnings and metrics.
    pub fn expiries(&self) -> Vec<(String, SystemTime)> {
        let state = self.read();
        let previous = state.in_state(GenerationState::Previous).map(|g| g.id);
        let mut out = Vec::new();
        for g in &state.generations {
            if g.state == GenerationState::Retired {
                continue;
            }
            let state_name = state_name(g.state);
            out.push((format!("G{} root ({state_name})", g.id), g.root.not_after));
            out.push((
                format!("G{} intermediate ({state_name})", g.id),
                g.intermediate.not_after,
            ));
            for der in &g.chain {
                if let Ok(info) = crate::CertInfo::parse(der) {
                    out.push((
                        format!("G{} chain CA {} ({state_name})", g.id, info.subject),
                        info.not_after,
                    ));
                }
            }
            if let Some((by, der)) = &g.cross_signed
                && Some(*by) == previous
                && let Ok(info) = crate::CertInfo::parse(der)
            {
                out.push((
                    format!("G{} root cross-signed by G{by}", g.id),
                    info.not_after,
                ));
            }
        }
        out
    }

    /// Proves the CA can sign right now without issuing anything: signs a one-minute
    /// leaf for `spiffe://<td>/writ/self-test` over `public_key` (an `EcP256` key's raw
    /// point) with the active intermediate, and verifies it against the current bundle at
    /// `now`. Nothing is recorded in the issuance log; the certificate is dropped. For
    /// health checks: an expired or unusable intermediate, or a broken chain, fails here.
    pub fn self_test(&self, public_key: &[u8], now: SystemTime) -> Result<(), Error> {
        let state = self.read();
        let generation = state.active()?;
        let issuer = generation
            .intermediate
            .signing_ref()
            .ok_or_else(|| Error::Corrupt("the active intermediate has no key".into()))?;
        let template = LeafTemplate {
            id: self.settings.trust_domain.workload("writ/self-test")?,
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            key_type: KeyType::EcP256,
            public_key: public_key.to_vec(),
            lifetime: Duration::from_secs(60),
            auth: crate::AuthMethod::Internal,
        };
        let leaf = sign_leaf(&template, &issuer, now, self.settings.backdate)?;
        let previous = state.in_state(GenerationState::Previous).map(|g| g.id);
        let mut chain = vec![leaf.der];
        chain.extend(generation.chain_after_leaf(previous));
        verify_chain(
            &chain,
            &bundle_of(&state, &self.settings).roots,
            now,
            Usage::Client,
        )?;
        Ok(())
    }

    /// Unexpired leaves per generation at `now`, from the issuance log.
    fn live_leaves(&self, now: SystemTime) -> Result<LiveLeaves, Error> {
        Ok(self
            .store
            .live_leaves(unix(now))?
            .into_iter()
            .map(|(g, (count, latest))| {
                (
                    g,
                    (count, SystemTime::UNIX_EPOCH + Duration::from_secs(latest)),
                )
            })
            .collect())
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

fn can_prepare(state: &State) -> Result<(), Error> {
    if let Some(p) = state.in_state(GenerationState::Prepared) {
        return Err(Error::Rotation(format!(
            "generation G{} is already prepared; activate it first",
            p.id
        )));
    }
    if let Some(p) = state.in_state(GenerationState::Previous) {
        return Err(Error::Rotation(format!(
            "generation G{} is still previous; retire it first",
            p.id
        )));
    }
    Ok(())
}

fn summary(g: &Generation, live: &LiveLeaves) -> GenerationSummary {
    let (live_leaves, latest) = match live.get(&g.id) {
        Some(&(n, t)) => (n, Some(t)),
        None => (0, None),
    };
    GenerationSummary {
        id: g.id,
        state: g.state,
        key_type: g.key_type(),
        root_fingerprint: g.root.fingerprint(),
        root_not_after: g.root.not_after,
        intermediate_not_after: g.intermediate.not_after,
        live_leaves,
        latest_leaf_not_after: latest,
        since: g.since,
        imported: g.imported,
        cross_signed: g.cross_signed.is_some(),
    }
}

fn state_name(s: GenerationState) -> &'static str {
    match s {
        GenerationState::Prepared => "prepared",
        GenerationState::Active => "active",
        GenerationState::Previous => "previous",
        GenerationState::Retired => "retired",
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

fn encode_state(
    state: &State,
    td: &TrustDomain,
    sealer: &Sealer,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let mut stored = StoredState {
        version: STATE_VERSION,
        trust_domain: td.to_string(),
        bundle_sequence: state.bundle_sequence,
        generations: state
            .generations
            .iter()
            .map(Generation::to_stored)
            .collect(),
    };
    if let Some(kek) = sealer.kek() {
        for g in &mut stored.generations {
            g.seal_keys(td.as_str(), kek)?;
        }
    }
    serde_json::to_vec(&stored)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| Error::Storage(e.to_string()))
}

/// Decodes the state, opening sealed keys. Also returns the trust domain it was stored
/// under (the configured one, or an alias being migrated from) and how many keys were
/// stored unencrypted although `sealer` holds a KEK.
fn decode_state(
    bytes: &[u8],
    settings: &CaSettings,
    sealer: &Sealer,
) -> Result<(State, TrustDomain, usize), Error> {
    let td = &settings.trust_domain;
    let mut stored: StoredState =
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("CA state: {e}")))?;
    if stored.version > STATE_VERSION {
        return Err(Error::Corrupt(format!(
            "CA state version {} was written by a newer writ (this one reads up to {STATE_VERSION})",
            stored.version
        )));
    }
    let alias = settings
        .trust_domain_aliases
        .iter()
        .find(|a| a.as_str() == stored.trust_domain);
    if stored.trust_domain != td.as_str() && alias.is_none() {
        return Err(Error::Corrupt(format!(
            "this data directory belongs to trust domain {:?}, not {td:?}; use --trust-domain {} or another --data-dir",
            stored.trust_domain, stored.trust_domain
        )));
    }
    // Keys are sealed bound to the trust domain they were stored under.
    let stored_td = alias.unwrap_or(td).clone();
    let mut unsealed = 0;
    for g in &mut stored.generations {
        unsealed += g.open_keys(stored_td.as_str(), sealer.kek())?;
    }
    let generations = stored
        .generations
        .iter()
        .map(Generation::from_stored)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        State {
            generations,
            bundle_sequence: stored.bundle_sequence,
        },
        stored_td,
        unsealed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 state (written before rotation existed: keys always present, none of
    /// the version 2 fields) still loads; a state from a newer writ is refused.
    #[test]
    fn version_1_state_loads() {
        let td = TrustDomain::parse("example.org").unwrap();
        let g = Generation::create(
            1,
            &td,
            KeyType::EcP256,
            CaSettings::new(td.clone()).validity(),
            GenerationState::Active,
            SystemTime::now(),
        )
        .unwrap();
        let state = State {
            generations: vec![g],
            bundle_sequence: 1,
        };
        let mut v: serde_json::Value =
            serde_json::from_slice(&encode_state(&state, &td, &Sealer::Plaintext).unwrap())
                .unwrap();
        v["version"] = 1.into();
        for g in v["generations"].as_array_mut().unwrap() {
            let g = g.as_object_mut().unwrap();
            for field in ["imported", "chain", "cross_signed"] {
                assert!(g.remove(field).is_some(), "{field}");
            }
            for cert in ["root", "intermediate"] {
                let cert = g.get_mut(cert).unwrap().as_object_mut().unwrap();
                assert!(cert.remove("imported").is_some());
                assert!(cert["key"].is_string());
            }
        }
        let settings = CaSettings::new(td.clone());
        let (loaded, _, _) = decode_state(
            &serde_json::to_vec(&v).unwrap(),
            &settings,
            &Sealer::Plaintext,
        )
        .unwrap();
        let (old, new) = (&state.generations[0], &loaded.generations[0]);
        assert_eq!(new.root.der, old.root.der);
        assert_eq!(new.intermediate.der, old.intermediate.der);
        assert_eq!(new.since, old.since);
        assert!(new.intermediate.key().is_some() && new.root.key().is_some());
        assert!(!new.imported && new.chain.is_empty() && new.cross_signed.is_none());

        v["version"] = (STATE_VERSION + 1).into();
        let newer = decode_state(
            &serde_json::to_vec(&v).unwrap(),
            &settings,
            &Sealer::Plaintext,
        );
        assert!(matches!(newer, Err(Error::Corrupt(m)) if m.contains("newer writ")));
    }
}
