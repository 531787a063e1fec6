//! The CA's state as stored: generations (keys sealed under the KEK when there is one),
//! the bundle sequence, and the trust domain they belong to.

use super::{CaSettings, State};
use crate::generation::StoredGeneration;
use crate::seal::Sealer;
use crate::{Error, Generation, TrustDomain};

pub(super) const STATE_TREE: &str = "ca";
pub(super) const STATE_KEY: &[u8] = b"state";
/// 2 added rotation: the `previous` state, optional keys (imported roots, retired
/// generations), imported chains and cross-signed roots. 3 added sealed keys
/// (`sealed_key`), which an older writ would mistake for absent keys. Earlier states load
/// as is.
pub(super) const STATE_VERSION: u32 = 3;

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredState {
    version: u32,
    trust_domain: String,
    bundle_sequence: u64,
    generations: Vec<StoredGeneration>,
}

pub(super) fn encode_state(
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
pub(super) fn decode_state(
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
        return Err(Error::WrongTrustDomain {
            stored: stored.trust_domain,
            configured: td.to_string(),
        });
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
    use std::time::SystemTime;

    use super::*;
    use crate::{GenerationState, KeyType};

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
