//! `writ agent`: keep a valid identity at all times. The current identity lives in a
//! `tokio::sync::watch`; the rotation task renews it at a jittered fraction of its life
//! (backing off exponentially with jitter on failure), the bundle task follows the CA's
//! bundle stream, and the Workload API serves whatever the watch holds. Idle, the agent
//! sleeps on its timer and its stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use writ_ca::KeyType;

use crate::client::ServerTrust;
use crate::clock::{self, Clock, SystemClock};
use crate::files::{self, Identity};
use crate::lifetime::Granted;
use crate::metrics::AgentMetrics;
use crate::platform::{self, JwtSource};
use crate::renew::{RenewOptions, Renewed, renew};
use crate::schedule::Schedule;
use crate::status::{AgentStatus, rfc3339};
use crate::watch::{BundleWatch, Transport};
use crate::{Error, hook, workload};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The CA, `host:port`.
    pub server: String,
    /// Where cert.pem, key.pem and bundle.pem live.
    pub out_dir: PathBuf,
    /// A one-time bootstrap token for the first identity.
    pub bootstrap_token_file: Option<PathBuf>,
    /// Serve the SPIFFE Workload API on this Unix socket.
    pub workload_api_socket: Option<PathBuf>,
    /// Run after every update of the files.
    pub on_rotate: Option<String>,
    /// How long `on_rotate` may run.
    pub on_rotate_timeout: Duration,
    /// When to renew.
    pub schedule: Schedule,
    /// Key type of each new key.
    pub key_type: KeyType,
    /// Requested certificate lifetime; `None` for the server's default.
    pub ttl: Option<Duration>,
    /// Authenticate with a platform JWT (first certificate and every renewal) instead of
    /// a bootstrap token and mTLS renewal.
    pub jwt: Option<JwtSource>,
    /// Serve Prometheus metrics and `/healthz` over plain HTTP here (off when `None`).
    pub metrics_listen: Option<SocketAddr>,
    /// Who may call the Workload API.
    pub workload_callers: workload::Callers,
}

type Current = watch::Sender<Option<Arc<Identity>>>;

/// State the agent's tasks share.
struct Agent {
    opts: AgentOptions,
    current: Current,
    status: Mutex<AgentStatus>,
    /// Serialises read-modify-write of the identity between rotation and bundle updates.
    update: tokio::sync::Mutex<()>,
    metrics: Arc<AgentMetrics>,
    /// Where the rotation loop reads the time (it sleeps on tokio's timer).
    clock: Arc<dyn Clock>,
    /// Where renewals come from.
    renewal: Renewal,
}

/// Where the rotation loop gets a renewed identity.
enum Renewal {
    /// From the CA at `AgentOptions::server`, over mTLS or with the platform JWT.
    Ca,
    /// From a function of the current identity: the loop's timing under test.
    #[cfg(test)]
    Fake(FakeRenewal),
}

#[cfg(test)]
type FakeRenewal = Arc<
    dyn Fn(Arc<Identity>) -> std::pin::Pin<Box<dyn Future<Output = Result<Renewed, Error>> + Send>>
        + Send
        + Sync,
>;

/// Runs the agent until `shutdown` or an error retrying cannot fix.
pub async fn run(opts: AgentOptions, shutdown: CancellationToken) -> Result<(), Error> {
    // Held until this function returns: one agent per out dir, and proof of life for
    // `writ agent uninstall`.
    let _lock = crate::lock::acquire(&opts.out_dir).map_err(|e| {
        Error::OutDir(format!(
            "holding {}: {e}",
            crate::lock::path(&opts.out_dir).display()
        ))
    })?;
    let (first, first_lifetime) = first_identity(&opts).await?;
    let mut warned = None;
    warn_lifetime(&mut warned, first_lifetime);
    let id = first.spiffe_id()?;
    tracing::info!(spiffe_id = %id, serial = %first.leaf_info()?.serial, "identity in place");
    let metrics = Arc::new(AgentMetrics::default());
    metrics.identity(&first);
    let (current, rx) = watch::channel(Some(Arc::new(first)));
    let metrics_listen = match opts.metrics_listen {
        Some(addr) => Some(
            crate::metrics::start(addr, metrics.clone(), rx.clone(), shutdown.clone())
                .await?
                .to_string(),
        ),
        None => None,
    };
    let agent = Arc::new(Agent {
        status: Mutex::new(AgentStatus {
            pid: std::process::id(),
            metrics_listen,
            ..Default::default()
        }),
        opts,
        current,
        update: tokio::sync::Mutex::new(()),
        metrics,
        clock: Arc::new(SystemClock),
        renewal: Renewal::Ca,
    });
    agent.write_status(|_| {});

    if let Some(socket) = agent.opts.workload_api_socket.clone() {
        let stop = shutdown.clone();
        let api = workload::WorkloadApi::new(rx, id.trust_domain())
            .with_callers(agent.opts.workload_callers.clone())
            .counting_refusals(agent.metrics.workload_refused.clone());
        agent.metrics.workload_streams(api.open_streams());
        tokio::spawn(async move {
            if let Err(e) = api.serve(&socket, stop.cancelled_owned()).await {
                tracing::error!(error = %e, "Workload API stopped");
            }
        });
    }
    tokio::spawn(follow_bundle(agent.clone(), shutdown.clone()));
    let result = rotate(agent.clone(), shutdown, warned).await;
    if let Err(e) = &result {
        agent.write_status(|s| s.last_error = Some(e.to_string()));
    }
    result
}

/// The identity to start from, and what lifetime the CA granted when it was obtained
/// just now with a bootstrap token.
async fn first_identity(opts: &AgentOptions) -> Result<(Identity, Option<Granted>), Error> {
    if let Some(token) = &opts.bootstrap_token_file {
        let done = crate::bootstrap::bootstrap(
            &opts.server,
            token,
            &opts.out_dir,
            opts.key_type,
            opts.ttl,
        )
        .await?;
        return Ok((done.identity, done.lifetime));
    }
    if let Some(jwt) = &opts.jwt {
        if let Some(id) = files::read_identity(&opts.out_dir)?
            && id.leaf_info()?.not_after > SystemTime::now()
        {
            return Ok((id, None));
        }
        let id = platform::obtain(&opts.server, jwt, None, opts.key_type, opts.ttl).await?;
        let dir = opts.out_dir.clone();
        let written = Arc::new(id);
        let to_write = written.clone();
        tokio::task::spawn_blocking(move || files::write_identity(&dir, &to_write))
            .await
            .map_err(|_| Error::Connect("file writer task failed".into()))??;
        tracing::info!(jwt_file = %jwt.jwt_file.display(), "first certificate obtained with a platform JWT");
        // Istio's answer does not say what lifetime it granted.
        return Arc::try_unwrap(written)
            .map(|id| (id, None))
            .map_err(|_| Error::Connect("identity still shared after writing".into()));
    }
    match files::read_identity(&opts.out_dir)? {
        Some(id) => {
            let leaf = id.leaf_info()?;
            if leaf.not_after <= SystemTime::now() {
                return Err(Error::Expired {
                    id: leaf.spiffe_id()?.to_string(),
                    at: rfc3339(leaf.not_after),
                });
            }
            Ok((id, None))
        }
        None => Err(Error::NoIdentity(format!(
            "no certificate in {} and no --bootstrap-token-file: mint one (writ x509 mint) or give the agent a bootstrap token (writ token create)",
            opts.out_dir.display()
        ))),
    }
}

impl Agent {
    fn identity(&self) -> Arc<Identity> {
        // The watch is created with Some and only ever replaced with Some.
        self.current
            .borrow()
            .clone()
            .unwrap_or_else(|| unreachable!("the agent always holds an identity"))
    }

    fn write_status(&self, f: impl FnOnce(&mut AgentStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        if let Err(e) = s.write(&self.opts.out_dir) {
            tracing::warn!(error = %e, "could not write the agent status file");
        }
    }

    /// One renewal attempt of the current identity.
    async fn renew_once(&self, opts: RenewOptions) -> Result<Renewed, Error> {
        let current = self.identity();
        match (&self.renewal, &self.opts.jwt) {
            // Every renewal proves the platform identity afresh, as Istio's agent does: a
            // deleted service account stops getting certificates. Istio's answer does not
            // say what lifetime it granted.
            (Renewal::Ca, Some(jwt)) => platform::obtain(
                &self.opts.server,
                jwt,
                Some(&current),
                opts.key_type,
                opts.ttl,
            )
            .await
            .map(|identity| Renewed {
                identity,
                lifetime: None,
            }),
            (Renewal::Ca, None) => renew(&self.opts.server, &current, opts).await,
            #[cfg(test)]
            (Renewal::Fake(f), _) => f(current).await,
        }
    }

    /// Writes `new` as the current identity, publishes it and runs the hook.
    async fn publish(&self, new: Identity) -> Result<(), Error> {
        let dir = self.opts.out_dir.clone();
        let new = Arc::new(new);
        let to_write = new.clone();
        tokio::task::spawn_blocking(move || files::write_identity(&dir, &to_write))
            .await
            .map_err(|_| Error::Connect("file writer task failed".into()))??;
        self.metrics.identity(&new);
        self.current.send_replace(Some(new));
        if let Some(cmd) = &self.opts.on_rotate {
            hook::run(cmd, &self.opts.out_dir, self.opts.on_rotate_timeout).await;
        }
        Ok(())
    }
}

/// Renews before each expiry until `shutdown`; `warned` is the lifetime last warned about
/// (see [`warn_lifetime`]).
async fn rotate(
    agent: Arc<Agent>,
    shutdown: CancellationToken,
    mut warned: Option<Duration>,
) -> Result<(), Error> {
    let renew_opts = RenewOptions {
        key_type: agent.opts.key_type,
        ttl: agent.opts.ttl,
    };
    // Lifetimes count from when the agent obtained the certificate, not from notBefore:
    // CAs backdate notBefore for clock skew, which would otherwise eat a short lifetime.
    // A certificate found on disk counts from its notBefore.
    let mut obtained: Option<SystemTime> = None;
    loop {
        let current = agent.identity();
        let leaf = current.leaf_info()?;
        let base = obtained.unwrap_or(leaf.not_before).max(leaf.not_before);
        let at = agent
            .opts
            .schedule
            .renewal_time(base, leaf.not_after, rand::random::<f64>());
        agent.metrics.next_renewal(at);
        agent.write_status(|s| s.next_renewal = Some(rfc3339(at)));
        let wait = clock::until(agent.clock.as_ref(), at);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }

        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(
                agent
                    .opts
                    .schedule
                    .max_backoff(leaf.not_before, leaf.not_after),
            )
            .without_max_times();
        let attempt = || agent.renew_once(renew_opts);
        let renewed = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = attempt
                .retry(backoff)
                .when(|e: &Error| !e.is_permanent())
                .notify(|e: &Error, pause: Duration| {
                    tracing::warn!(error = %e, retry_in = ?pause, "renewal failed; keeping the current certificate");
                    agent.metrics.rotation_failed();
                    agent.write_status(|s| s.last_error = Some(e.to_string()));
                }) => r,
        };
        match renewed {
            Ok(new) => {
                obtained = Some(agent.clock.now());
                warn_lifetime(&mut warned, new.lifetime);
                let _guard = agent.update.lock().await;
                let serial = new.identity.leaf_info()?.serial;
                agent.publish(new.identity).await?;
                tracing::info!(%serial, "rotated");
                agent.metrics.rotated();
                agent.write_status(|s| {
                    s.rotations += 1;
                    s.last_error = None;
                });
            }
            Err(e @ Error::Expired { .. }) => {
                agent.metrics.rotation_failed();
                return Err(e);
            }
            Err(e) => {
                agent.metrics.rotation_failed();
                // Retrying will not help until someone changes something (identity denied,
                // policy changed): report it and try again much later, not in a loop.
                tracing::error!(error = %e, "renewal refused; will try again later");
                agent.write_status(|s| s.last_error = Some(e.to_string()));
                let pause = agent
                    .opts
                    .schedule
                    .max_backoff(leaf.not_before, leaf.not_after)
                    * 5;
                let until_expiry = clock::until(agent.clock.as_ref(), leaf.not_after);
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause.min(until_expiry)) => {}
                }
                if leaf.not_after <= agent.clock.now() {
                    return Err(Error::Expired {
                        id: leaf.spiffe_id()?.to_string(),
                        at: rfc3339(leaf.not_after),
                    });
                }
            }
        }
    }
}

/// Warns when the CA granted another lifetime than asked for: at the first such renewal
/// and whenever the lifetime granted changes. `warned` holds the last one warned about.
fn warn_lifetime(warned: &mut Option<Duration>, lifetime: Option<Granted>) {
    let Some(g) = lifetime else { return };
    match g.note() {
        Some(note) if *warned != Some(g.granted) => {
            tracing::warn!(
                requested_ttl_seconds = g.requested.map(|d| d.as_secs()),
                ttl_seconds = g.granted.as_secs(),
                "{note}"
            );
            *warned = Some(g.granted);
        }
        Some(_) => {}
        None => *warned = None,
    }
}

/// Follows the CA's bundle for as long as the agent runs (over the push channel when the
/// server offers it), reconnecting with backoff, and swaps each new bundle into the files
/// and the Workload API at once.
async fn follow_bundle(agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        let open = || async {
            let current = agent.identity();
            let id = current.spiffe_id()?;
            let trust = ServerTrust::Bundle {
                trust_domain: id.trust_domain(),
                roots: current.bundle.clone(),
            };
            BundleWatch::open(&agent.opts.server, trust, Some(&current), Transport::Auto).await
        };
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times();
        let mut watch = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = open.retry(backoff).notify(|e: &Error, pause: Duration| {
                tracing::debug!(error = %e, retry_in = ?pause, "bundle watch unavailable");
            }) => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "bundle watch refused");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => continue,
                    }
                }
            },
        };
        let transport = watch.transport().as_str();
        tracing::debug!(transport, "following the trust bundle");
        agent.write_status(|s| s.bundle_transport = Some(transport.to_owned()));
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = watch.next() => m,
            };
            match msg {
                Ok(Some(bundle)) => {
                    if let Err(e) = apply_bundle(&agent, bundle).await {
                        tracing::warn!(error = %e, "could not apply the new trust bundle");
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::debug!("bundle watch ended; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn apply_bundle(agent: &Agent, bundle: writ_proto::v1::TrustBundle) -> Result<(), Error> {
    let _guard = agent.update.lock().await;
    let current = agent.identity();
    let id = current.spiffe_id()?;
    if bundle.trust_domain != id.trust_domain_str() || bundle.roots.is_empty() {
        return Err(Error::InvalidResponse(format!(
            "bundle for {:?} with {} roots does not fit {id}",
            bundle.trust_domain,
            bundle.roots.len()
        )));
    }
    if bundle.roots == current.bundle {
        return Ok(());
    }
    let updated = current.with_bundle(bundle.roots)?;
    agent.publish(updated).await?;
    tracing::info!(sequence = bundle.sequence, "trust bundle updated");
    agent.metrics.bundle_updated();
    agent.write_status(|s| s.bundle_updates += 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tonic::Code;

    use super::*;
    use crate::clock::TokioClock;
    use crate::files::testing::TestCa;

    const HOUR: Duration = Duration::from_secs(3600);

    /// What the fake CA saw: the moment of every renewal attempt.
    type Attempts = Arc<StdMutex<Vec<SystemTime>>>;

    /// An agent on a paused clock whose renewals come from `answer`, called with the
    /// attempt's number (0 first) and time, and the CA.
    fn agent_on(
        out: &std::path::Path,
        ca: Arc<TestCa>,
        answer: impl Fn(usize, SystemTime, &TestCa) -> Result<Renewed, Error> + Send + Sync + 'static,
    ) -> (Arc<Agent>, Attempts, watch::Receiver<Option<Arc<Identity>>>) {
        let clock = Arc::new(TokioClock::starting_at(SystemTime::now()));
        let first = ca.issue_at("web", HOUR, clock.now());
        files::write_identity(out, &first).unwrap();
        let (current, rx) = watch::channel(Some(Arc::new(first)));
        let attempts: Attempts = Arc::default();
        let seen = attempts.clone();
        let now = clock.clone();
        let answer = Arc::new(answer);
        let renewal: FakeRenewal = Arc::new(move |_current| {
            let at = now.now();
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(at);
                seen.len() - 1
            };
            let result = answer(n, at, &ca);
            Box::pin(async move { result })
        });
        let agent = Arc::new(Agent {
            opts: AgentOptions {
                server: "127.0.0.1:1".into(),
                out_dir: out.to_path_buf(),
                bootstrap_token_file: None,
                workload_api_socket: None,
                on_rotate: None,
                on_rotate_timeout: Duration::from_secs(1),
                schedule: Schedule::default(),
                key_type: KeyType::EcP256,
                ttl: None,
                jwt: None,
                metrics_listen: None,
                workload_callers: workload::Callers::default(),
            },
            current,
            status: Mutex::new(AgentStatus::default()),
            update: tokio::sync::Mutex::new(()),
            metrics: Arc::new(AgentMetrics::default()),
            clock,
            renewal: Renewal::Fake(renewal),
        });
        (agent, attempts, rx)
    }

    fn renewed(ca: &TestCa, now: SystemTime) -> Result<Renewed, Error> {
        Ok(Renewed {
            identity: ca.issue_at("web", HOUR, now),
            lifetime: None,
        })
    }

    /// Hours of rotation in paused time: each renewal comes at 50% ± 10% of the life the
    /// certificate had when the agent obtained it, and what was renewed is what is on disk.
    #[tokio::test(start_paused = true)]
    async fn renews_at_the_scheduled_fraction_of_each_lifetime() {
        let out = tempfile::tempdir().unwrap();
        let ca = Arc::new(TestCa::new());
        let (agent, attempts, mut rx) = agent_on(out.path(), ca, |_, at, ca| renewed(ca, at));
        let issued_at = agent.clock.now();
        let stop = CancellationToken::new();
        let task = tokio::spawn(rotate(agent.clone(), stop.clone(), None));
        for _ in 0..8 {
            rx.changed().await.unwrap();
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        let attempts = attempts.lock().unwrap().clone();
        assert!(attempts.len() >= 8, "{attempts:?}");
        // The first certificate counts from its notBefore, backdated 10 s by the CA.
        let mut since = issued_at - Duration::from_secs(10);
        for at in &attempts {
            let gap = at.duration_since(since).unwrap();
            assert!(
                gap >= HOUR.mul_f64(0.4) && gap <= HOUR.mul_f64(0.6) + Duration::from_secs(10),
                "renewed {gap:?} into a {HOUR:?} certificate"
            );
            since = *at;
        }
        let on_disk = files::read_identity(out.path()).unwrap().unwrap();
        assert_eq!(
            on_disk.leaf_info().unwrap().serial,
            agent.identity().leaf_info().unwrap().serial
        );
    }

    /// An unreachable CA is retried soon and with growing pauses, and the certificate the
    /// CA finally issues is published.
    #[tokio::test(start_paused = true)]
    async fn an_unavailable_ca_is_retried_with_growing_pauses() {
        let out = tempfile::tempdir().unwrap();
        let ca = Arc::new(TestCa::new());
        let (agent, attempts, mut rx) = agent_on(out.path(), ca, |n, at, ca| {
            if n < 4 {
                Err(Error::Connect("the writ server is unavailable".into()))
            } else {
                renewed(ca, at)
            }
        });
        let first = agent.identity().leaf_info().unwrap().serial;
        let stop = CancellationToken::new();
        let task = tokio::spawn(rotate(agent.clone(), stop.clone(), None));
        rx.changed().await.unwrap();
        stop.cancel();
        task.await.unwrap().unwrap();
        let attempts = attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 5, "{attempts:?}");
        let gaps: Vec<Duration> = attempts
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap())
            .collect();
        // backon: from 200 ms, doubling, with up to as much again in jitter.
        for (i, gap) in gaps.iter().enumerate() {
            let base = Duration::from_millis(200) * 2u32.pow(i as u32);
            assert!(*gap >= base && *gap <= base * 2, "retry {i} after {gap:?}");
        }
        assert_ne!(agent.identity().leaf_info().unwrap().serial, first);
    }

    /// A refusal is not retried in a loop: the agent waits (here until the certificate
    /// expires) and then stops with an error saying the identity expired.
    #[tokio::test(start_paused = true)]
    async fn a_refused_renewal_waits_and_ends_when_the_certificate_expires() {
        let out = tempfile::tempdir().unwrap();
        let ca = Arc::new(TestCa::new());
        let (agent, attempts, _rx) = agent_on(out.path(), ca, |_, _, _| {
            Err(Error::Rejected {
                code: Code::PermissionDenied,
                message: "spiffe://example.org/web is denied".into(),
            })
        });
        let not_after = agent.identity().leaf_info().unwrap().not_after;
        let result = rotate(agent.clone(), CancellationToken::new(), None).await;
        assert!(matches!(result, Err(Error::Expired { .. })), "{result:?}");
        assert!(agent.clock.now() >= not_after);
        // An attempt at the renewal time (30 min ± 6), then pauses of five times the
        // longest backoff (5 × 5 min), cut at the expiry: one or two attempts in the hour.
        let attempts = attempts.lock().unwrap().clone();
        assert!((1..=2).contains(&attempts.len()), "{attempts:?}");
        if let [a, b] = attempts[..] {
            assert_eq!(b.duration_since(a).unwrap(), Duration::from_secs(25 * 60));
        }
    }
}
