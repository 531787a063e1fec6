//! Load threads: each runs a current-thread runtime that owns some connections and the
//! workers sending on them. A connection's task and its requests are then woken on one
//! thread (no cross-thread wake-ups, no work stealing), so the load generator takes less
//! of the CPU it shares with the server it measures.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use writ_proto::v1::ca_client::CaClient;

use crate::Error;
use crate::load::Worker;
use crate::stats::Samples;
use crate::transport::{self, Direct};

/// What one load thread runs.
#[derive(Default)]
pub(crate) struct Shard {
    /// Long-lived connections to open before the clock starts (renew mode).
    pub connections: usize,
    /// The workers, each keeping one request in flight.
    pub workers: Vec<Worker>,
}

/// Runs every shard on a thread of its own for `duration` and merges what they measured;
/// blocks until the last one finishes. The clock starts once every shard has connected;
/// if one cannot, none starts.
pub(crate) fn run_all(
    shards: Vec<Shard>,
    server: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    duration: Duration,
) -> Result<(Samples, Duration), Error> {
    let (connected, ready) = mpsc::channel();
    let mut threads = Vec::with_capacity(shards.len());
    let mut failed = None;
    for (i, shard) in shards.into_iter().enumerate() {
        let (go, start) = mpsc::channel();
        let (server, tls, connected) = (server.to_owned(), tls.clone(), connected.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("writ-load-{i}"))
            .spawn(move || shard.run(&server, tls, &connected, &start, duration));
        match spawned {
            Ok(handle) => threads.push((handle, go)),
            Err(e) => {
                failed = Some(Error::Options(format!("cannot start a load thread: {e}")));
                break;
            }
        }
    }
    drop(connected);
    if failed.is_none() {
        for _ in 0..threads.len() {
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(_) => failed = failed.or(Some(Error::Options("a load thread stopped".into()))),
            }
        }
    }
    // One start for every thread, or none.
    let start = failed.is_none().then(Instant::now);
    for (_, go) in &threads {
        let _ = go.send(start);
    }
    let mut samples = Samples::default();
    for (handle, _) in threads {
        match handle.join() {
            Ok(Some(s)) => samples.merge(s),
            Ok(None) => {}
            Err(_) => failed = failed.or(Some(Error::Options("a load thread panicked".into()))),
        }
    }
    match (failed, start) {
        (None, Some(start)) => Ok((samples, start.elapsed())),
        (Some(e), _) => Err(e),
        (None, None) => Err(Error::Options("the load never started".into())),
    }
}

impl Shard {
    /// Connects, reports on `connected`, waits for the start (none: another thread could
    /// not connect) and runs the workers until `duration` after it.
    fn run(
        self,
        server: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        connected: &mpsc::Sender<Result<(), Error>>,
        start: &mpsc::Receiver<Option<Instant>>,
        duration: Duration,
    ) -> Option<Samples> {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = connected.send(Err(Error::Options(format!(
                    "cannot start a load runtime: {e}"
                ))));
                return None;
            }
        };
        runtime.block_on(async move {
            let clients = match self.connect(server, tls).await {
                Ok(c) => {
                    let _ = connected.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = connected.send(Err(e));
                    return None;
                }
            };
            // Blocking this thread is fine: nothing else runs on it before the start.
            let deadline = start.recv().ok().flatten()? + duration;
            let tasks: Vec<_> = self
                .workers
                .into_iter()
                .enumerate()
                .map(|(i, worker)| {
                    let client = (!clients.is_empty()).then(|| clients[i % clients.len()].clone());
                    tokio::spawn(worker.run(client, deadline))
                })
                .collect();
            let mut samples = Samples::default();
            for task in tasks {
                if let Ok(s) = task.await {
                    samples.merge(s);
                }
            }
            Some(samples)
        })
    }

    /// Opens this shard's long-lived connections (none outside renew mode).
    async fn connect(
        &self,
        server: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Vec<CaClient<Direct>>, Error> {
        let Some(tls) = tls else {
            return Ok(Vec::new());
        };
        let mut clients = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            let client = transport::connect(server, tls.clone())
                .await
                .map_err(|e| writ_agent::client::unreachable(server, &e))?;
            clients.push(client);
        }
        Ok(clients)
    }
}
