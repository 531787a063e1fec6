//! Keeping the CA's own certificates usable: the intermediate renewed before leaves would
//! be cut short, their expiries listed for warnings, and a self-test for health checks.

use std::time::{Duration, SystemTime};

use super::{Authority, State, bundle_of};
use crate::issuer::sign_leaf;
use crate::verify::{Usage, verify_chain};
use crate::{Error, Generation, GenerationState, KeyType, LeafTemplate};

impl Authority {
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

    pub(super) fn renewal_due(&self, g: &Generation) -> SystemTime {
        let lifetime = self.settings.intermediate_validity;
        let margin = (lifetime / 2).max(self.settings.ttl.max().duration() * 2);
        g.intermediate
            .not_after
            .checked_sub(margin)
            .unwrap_or(SystemTime::UNIX_EPOCH)
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
        let (generation, issuer) = state.active_issuer()?;
        let template = LeafTemplate {
            id: self.settings.trust_domain.workload("writ/self-test")?,
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            key_type: KeyType::EcP256,
            public_key: public_key.to_vec(),
            lifetime: Duration::from_secs(60),
            limited_by: None,
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
}

fn state_name(s: GenerationState) -> &'static str {
    match s {
        GenerationState::Prepared => "prepared",
        GenerationState::Active => "active",
        GenerationState::Previous => "previous",
        GenerationState::Retired => "retired",
    }
}
