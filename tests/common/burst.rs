//! A burst of renewals on eight connections that runs until the server goes away, keeping
//! every serial handed out: what tests of crashes and shutdowns compare the log with.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, DistinguishedName, SanType};
use writ_agent::client::{ServerTrust, connect};
use writ_agent::files::Identity;
use writ_ca::{KeyType, PrivateKey, TrustDomain};
use writ_proto::v1::SignRequest;

/// Renewals in flight on eight connections.
pub struct Burst {
    received: Arc<Mutex<Vec<String>>>,
    enough: tokio::sync::watch::Receiver<bool>,
    workers: Vec<tokio::task::JoinHandle<tonic::Status>>,
}

/// What a burst ended with.
pub struct Ended {
    /// Serials of every certificate a client received.
    pub received: Vec<String>,
    /// The error that ended each connection's renewals.
    pub errors: Vec<tonic::Status>,
}

/// A CSR for `id` under `key`.
pub fn csr(key: &PrivateKey, id: &str) -> Vec<u8> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    p.serialize_request(key.rcgen_pair())
        .unwrap()
        .der()
        .to_vec()
}

impl Burst {
    /// Starts renewing as `me` (whose SPIFFE ID is `id`) against `addr` on eight
    /// connections, each until a request fails; [`Burst::enough`] completes once
    /// `threshold` certificates were received.
    pub fn start(addr: &str, me: Arc<Identity>, id: &str, threshold: usize) -> Burst {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let request = csr(&key, id);
        let received = Arc::new(Mutex::new(Vec::<String>::new()));
        let (enough_tx, enough) = tokio::sync::watch::channel(false);
        let workers = (0..8)
            .map(|_| {
                let (addr, me, request) = (addr.to_owned(), me.clone(), request.clone());
                let (received, enough_tx) = (received.clone(), enough_tx.clone());
                tokio::spawn(async move {
                    let trust = ServerTrust::Bundle {
                        trust_domain: TrustDomain::parse("cluster.local").unwrap(),
                        roots: me.bundle.clone(),
                    };
                    let mut client = connect(&addr, trust, Some(me.as_ref())).await.unwrap();
                    loop {
                        let answer = client
                            .sign(SignRequest {
                                csr: request.clone(),
                                ttl_seconds: 0,
                            })
                            .await;
                        match answer {
                            Ok(r) => {
                                let mut got = received.lock().unwrap();
                                got.push(r.into_inner().serial);
                                if got.len() >= threshold {
                                    let _ = enough_tx.send(true);
                                }
                            }
                            Err(status) => return status,
                        }
                    }
                })
            })
            .collect();
        Burst {
            received,
            enough,
            workers,
        }
    }

    /// Waits until the threshold was reached; requests are then in flight on every
    /// connection.
    pub async fn enough(&mut self) {
        self.enough.wait_for(|e| *e).await.unwrap();
    }

    /// Waits for every connection's renewals to end.
    pub async fn ended(self) -> Ended {
        let mut errors = Vec::new();
        for w in self.workers {
            errors.push(w.await.unwrap());
        }
        let received = self.received.lock().unwrap().clone();
        Ended { received, errors }
    }
}
