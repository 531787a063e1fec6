//! Root rotation: a new generation prepared beside the active one, activated, and the
//! old one retired once nothing it signed is still valid.

use std::time::{Duration, SystemTime};

use super::{Authority, State};
use crate::generation::{unix, whole_seconds};
use crate::{Error, Generation, GenerationState, KeyType};

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

impl Authority {
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
        let id = self.next_generation()?;
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
        let id = self.next_generation()?;
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

    /// The number the next prepared generation gets, if one may be prepared now.
    fn next_generation(&self) -> Result<u64, Error> {
        let state = self.read();
        can_prepare(&state)?;
        Ok(state.next_id())
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
