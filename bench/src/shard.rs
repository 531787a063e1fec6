//! Load threads: each runs a current-thread runtime that owns some connections and the
//! workers sending on them. A connection's task and its requests are then woken on one
//! thread (no cross-thread wake-ups, no work stealing), so the load generator takes less
//! of the CPU it shares with the server it measures.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::Error;
use crate::load::Worker;
use crate::stats::Samples;
use crate::transport;

/// What one load thread runs.
#[derive(Default)]
pub(crate) struct Shard {
    /// Long-lived connections to open before the clock starts (renew mode).
    pub connections: usize,
    /// The workers, each keeping one request in flight.
    pub workers: Vec<Worker>,
}

/// What a finished load thread measured.
struct Measured {
    samples: Samples,
    elapsed: Duration,
}

/// Runs every shard on a thread of its own for `duration` and merges what they measured;
/// blocks until the last one finishes. The clock starts once every shard has connected.
pub(crate) fn run_all(
    shards: Vec<Shard>,
    server: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    duration: Duration,
) -> Result<(Samples, Duration), Error> {
    let ready = Arc::new(Barrier::new(shards.len()));
    let threads = shards
        .into_iter()
        .enumerate()
        .map(|(i, shard)| {
            let (server, tls, ready) = (server.to_owned(), tls.clone(), ready.clone());
            std::thread::Builder::new()
                .name(format!("writ-load-{i}"))
                .spawn(move || shard.run(&server, tls, &ready, duration))
                .map_err(|e| Error::Options(format!("cannot start a load thread: {e}")))
        })
        .collect::<Vec<_>>();
    let mut samples = Samples::default();
    let mut elapsed = Duration::ZERO;
    let mut first_error = None;
    for thread in threads {
        let outcome = thread.and_then(|t| {
            t.join()
                .map_err(|_| Error::Options("a load thread panicked".into()))?
        });
        match outcome {
            Ok(m) => {
                samples.merge(m.samples);
                elapsed = elapsed.max(m.elapsed);
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((samples, elapsed)),
    }
}

impl Shard {
    fn run(
        self,
        server: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        ready: &Barrier,
        duration: Duration,
    ) -> Result<Measured, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Options(format!("cannot start a load runtime: {e}")));
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => {
                // The other threads wait for this one before they start.
                ready.wait();
                return Err(e);
            }
        };
        runtime.block_on(async move {
            let mut clients = Vec::with_capacity(self.connections);
            let mut failed = None;
            if let Some(tls) = tls.filter(|_| self.connections > 0) {
                for _ in 0..self.connections {
                    match transport::connect(server, tls.clone()).await {
                        Ok(c) => clients.push(c),
                        Err(e) => {
                            failed = Some(writ_agent::client::unreachable(server, &e));
                            break;
                        }
                    }
                }
            }
            ready.wait();
            if let Some(e) = failed {
                return Err(e.into());
            }
            let start = Instant::now();
            let deadline = start + duration;
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
            Ok(Measured {
                samples,
                elapsed: start.elapsed(),
            })
        })
    }
}
