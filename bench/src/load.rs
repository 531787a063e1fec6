//! The workers: each keeps one request in flight until the clock runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use writ_agent::client::{ServerTrust, client_config};
use writ_ca::{CertInfo, KeyType, PrivateKey, SpiffeId, build_csr};
use writ_proto::v1::ca_client::CaClient;
use writ_proto::v1::{SignRequest, SignResponse};

use crate::rotating::{RotatingCert, signing_key};
use crate::shard::{self, Shard};
use crate::stats::Samples;
use crate::transport::{self, Direct};
use crate::{BenchOptions, Error, Mode};

pub(crate) struct Outcome {
    pub samples: Samples,
    pub elapsed: Duration,
}

/// Distinct pre-signed CSRs that renewals cycle through: ECDSA signatures are randomised,
/// so one key yields as many different requests as wanted.
const EC_CSRS: usize = 1024;
/// RSA signatures are deterministic, so each distinct CSR needs its own key, and RSA key
/// generation is slow (seconds for 4096 bits): a few suffice to keep requests in flight
/// distinct from their neighbours.
const RSA_CSRS: usize = 4;

/// A request a worker can send again and again, and the identity its answer must name.
#[derive(Clone)]
struct Job {
    csr: Vec<u8>,
    expect: SpiffeId,
    token: Option<String>,
    /// Which of the pool's keys the CSR is for.
    key: usize,
}

/// The requests and the keys their CSRs are for.
struct Jobs {
    jobs: Vec<Job>,
    keys: Vec<Arc<dyn rustls::sign::SigningKey>>,
}

pub(crate) async fn generate(opts: &BenchOptions) -> Result<Outcome, Error> {
    if opts.concurrency == 0 || opts.connections == 0 {
        return Err(Error::Options(
            "--concurrency and --connections must be at least 1".into(),
        ));
    }
    let Jobs { jobs, keys } = prepare_jobs(opts)?;
    let (jobs, keys) = (Arc::new(jobs), Arc::new(keys));
    let trust = trust(opts)?;
    let renew_tls = match opts.mode {
        Mode::Renew => Some(Arc::new(client_config(
            trust.clone(),
            opts.identity.as_ref(),
        )?)),
        _ => None,
    };
    // One TLS configuration for every fresh connection: as a fleet of agents each parses
    // its own key once, the load generator should not pay that per connection.
    // Resumption is off so every connection is a full handshake with a certificate.
    let tls = {
        let identity = match opts.mode {
            Mode::Bootstrap => None,
            _ => opts.identity.as_ref(),
        };
        let mut config = client_config(trust.clone(), identity)?;
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    };
    let done = Arc::new(AtomicU64::new(0));
    let next_job = Arc::new(AtomicUsize::new(0));
    // One load thread per core: more would only take turns with each other.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match opts.mode {
        Mode::Renew => opts.connections.min(cores),
        _ => opts.concurrency.min(cores),
    };
    let mut shards: Vec<Shard> = (0..threads).map(|_| Shard::default()).collect();
    if opts.mode == Mode::Renew {
        for c in 0..opts.connections {
            shards[c % threads].connections += 1;
        }
    }
    for w in 0..opts.concurrency {
        // In handshake mode every worker is an agent of its own, presenting the
        // certificate its last renewal returned.
        let (tls, agent) = match (opts.mode, &opts.identity) {
            (Mode::Handshake, Some(identity)) => {
                let agent = Arc::new(RotatingCert::new(
                    &signing_key(&identity.key)?,
                    &identity.chain,
                ));
                let mut config = (*tls).clone();
                config.client_auth_cert_resolver = agent.clone();
                (Arc::new(config), Some(agent))
            }
            _ => (tls.clone(), None),
        };
        // Renewal workers are spread over the connections, and live on their
        // connection's thread.
        let shard = match opts.mode {
            Mode::Renew => (w % opts.connections) % threads,
            _ => w % threads,
        };
        shards[shard].workers.push(Worker {
            tls,
            agent,
            keys: keys.clone(),
            mode: opts.mode,
            server: opts.server.clone(),
            jobs: jobs.clone(),
            done: done.clone(),
            next_job: next_job.clone(),
        });
    }
    let start = Instant::now();
    let progress = opts.progress.then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let s = start.elapsed().as_secs_f64();
                eprint!("\r{s:5.1}s  {n:>9} certificates  {:>9.0}/s", n as f64 / s);
            }
        })
    });
    let (server, duration) = (opts.server.clone(), opts.duration);
    let measured =
        tokio::task::spawn_blocking(move || shard::run_all(shards, &server, renew_tls, duration))
            .await
            .map_err(|_| Error::Options("the load threads failed".into()))?;
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let (samples, elapsed) = measured?;
    Ok(Outcome { samples, elapsed })
}

fn prepare_jobs(opts: &BenchOptions) -> Result<Jobs, Error> {
    // Keys and CSRs are made before the clock starts: the client's key generation and
    // signing are not what is measured.
    let key = PrivateKey::generate(opts.key_type)?;
    let (jobs, keys) = match opts.mode {
        Mode::Renew | Mode::Handshake => {
            let identity = opts
                .identity
                .as_ref()
                .ok_or_else(|| Error::Options("this mode needs a client identity".into()))?;
            let id = identity.spiffe_id().map_err(writ_agent::Error::from)?;
            let (pool, keys) = csr_pool(key, opts.key_type, &id)?;
            let jobs = pool
                .into_iter()
                .map(|(csr, key)| Job {
                    csr,
                    expect: id.clone(),
                    token: None,
                    key,
                })
                .collect();
            (jobs, keys)
        }
        Mode::Bootstrap => {
            if opts.tokens.is_empty() {
                return Err(Error::Options("bootstrap mode needs tokens".into()));
            }
            let jobs = opts
                .tokens
                .iter()
                .map(|t| {
                    let claims = writ_bootstrap_claims(t)?;
                    Ok(Job {
                        csr: build_csr(&key, &claims, &[])?,
                        expect: claims,
                        token: Some(t.clone()),
                        key: 0,
                    })
                })
                .collect::<Result<_, Error>>()?;
            (jobs, vec![key])
        }
    };
    let keys = match opts.mode {
        Mode::Handshake => keys.iter().map(signing_key).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(Jobs { jobs, keys })
}

/// Distinct CSRs for `id`, each with the index of its key in the returned keys:
/// [`EC_CSRS`] signed with `key`, or for RSA [`RSA_CSRS`], each with its own key (the
/// first is `key`).
#[allow(clippy::type_complexity)]
fn csr_pool(
    key: PrivateKey,
    key_type: KeyType,
    id: &SpiffeId,
) -> Result<(Vec<(Vec<u8>, usize)>, Vec<PrivateKey>), Error> {
    if !key_type.is_rsa() {
        let pool = (0..EC_CSRS)
            .map(|_| Ok((build_csr(&key, id, &[])?, 0)))
            .collect::<Result<_, Error>>()?;
        return Ok((pool, vec![key]));
    }
    let mut keys = vec![key];
    for _ in 1..RSA_CSRS {
        keys.push(PrivateKey::generate(key_type)?);
    }
    let pool = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Ok((build_csr(k, id, &[])?, i)))
        .collect::<Result<_, Error>>()?;
    Ok((pool, keys))
}

/// The SPIFFE ID a token grants, read from its payload (the server verifies it).
fn writ_bootstrap_claims(token: &str) -> Result<SpiffeId, Error> {
    peek(token).map(|c| c.spiffe_id)
}

fn peek(token: &str) -> Result<writ_bootstrap::UnverifiedClaims, Error> {
    writ_bootstrap::install_crypto_provider();
    writ_bootstrap::peek_claims(token).map_err(|e| Error::Options(format!("bootstrap token: {e}")))
}

fn trust(opts: &BenchOptions) -> Result<ServerTrust, Error> {
    if let Some(identity) = &opts.identity {
        let id = identity.spiffe_id().map_err(writ_agent::Error::from)?;
        return Ok(ServerTrust::Bundle {
            trust_domain: id.trust_domain(),
            roots: identity.bundle.clone(),
        });
    }
    let token = opts
        .tokens
        .first()
        .ok_or_else(|| Error::Options("no identity and no tokens".into()))?;
    let claims = peek(token)?;
    Ok(ServerTrust::PinnedRoot {
        trust_domain: claims.spiffe_id.trust_domain(),
        fingerprint: claims.ca_fingerprint,
    })
}

/// One simulated client, keeping one request in flight until the clock runs out.
pub(crate) struct Worker {
    tls: Arc<rustls::ClientConfig>,
    /// Handshake mode: the certificate this simulated agent presents.
    agent: Option<Arc<RotatingCert>>,
    /// Handshake mode: the keys of the CSRs, for presenting what they were issued.
    keys: Arc<Vec<Arc<dyn rustls::sign::SigningKey>>>,
    mode: Mode,
    server: String,
    jobs: Arc<Vec<Job>>,
    done: Arc<AtomicU64>,
    /// The next job to send: requests cycle through the CSR pool (or use each
    /// bootstrap token once).
    next_job: Arc<AtomicUsize>,
}

impl Worker {
    /// Sends requests until `deadline`, on `client` or (handshake and bootstrap modes) on
    /// a new connection each.
    pub(crate) async fn run(self, client: Option<CaClient<Direct>>, deadline: Instant) -> Samples {
        let mut samples = Samples::default();
        while Instant::now() < deadline {
            let i = self.next_job.fetch_add(1, Ordering::Relaxed);
            let job = match self.mode {
                Mode::Bootstrap => match self.jobs.get(i) {
                    Some(j) => j.clone(),
                    None => break,
                },
                _ => self.jobs[i % self.jobs.len()].clone(),
            };
            let started = Instant::now();
            let result = match (&self.mode, &client) {
                (Mode::Renew, Some(c)) => sign(c.clone(), &job).await,
                _ => match transport::connect(&self.server, self.tls.clone()).await {
                    Ok(c) => sign(c, &job).await,
                    Err(_) => Err("connect".to_owned()),
                },
            };
            match result {
                Ok(chain) => {
                    samples.ok(started.elapsed());
                    self.done.fetch_add(1, Ordering::Relaxed);
                    if let (Some(agent), Some(key)) = (&self.agent, self.keys.get(job.key)) {
                        agent.replace(key, &chain);
                    }
                }
                Err(kind) => samples.error(kind),
            }
        }
        samples
    }
}

/// Sends `job` and returns the checked chain.
async fn sign(mut client: CaClient<Direct>, job: &Job) -> Result<Vec<Vec<u8>>, String> {
    let mut req = tonic::Request::new(SignRequest {
        csr: job.csr.clone(),
        ttl_seconds: 0,
    });
    if let Some(token) = &job.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "bad-token".to_owned())?;
        req.metadata_mut().insert("authorization", value);
    }
    let resp = client
        .sign(req)
        .await
        .map_err(|s| format!("{:?}", s.code()))?;
    check(resp.into_inner(), &job.expect)
}

/// A cheap check that the answer is a certificate for the right identity.
fn check(resp: SignResponse, expect: &SpiffeId) -> Result<Vec<Vec<u8>>, String> {
    let leaf = resp.chain.first().ok_or("invalid-response")?;
    match CertInfo::spiffe_id_of(leaf) {
        Ok(id) if id == *expect => Ok(resp.chain),
        _ => Err("invalid-response".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn renewals_cycle_through_distinct_csrs() {
        let id = SpiffeId::parse("spiffe://bench.invalid/w").unwrap();
        for kind in [KeyType::EcP256, KeyType::EcP384] {
            let key = PrivateKey::generate(kind).unwrap();
            let (pool, keys) = csr_pool(key, kind, &id).unwrap();
            assert_eq!((pool.len(), keys.len()), (EC_CSRS, 1));
            assert_eq!(pool.iter().collect::<HashSet<_>>().len(), EC_CSRS, "{kind}");
        }
    }
}
