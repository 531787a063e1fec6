//! Group commit for the async signing path: handlers sign on the async workers, write the
//! issuance record unsynced, and await one flush shared by every request that arrived
//! meanwhile. One thread does the flushing, so no request parks a thread of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use writ_ca::Flushed;
use writ_ca::store::Store;

use crate::metrics::ServerMetrics;

/// The longest the commit thread holds a flush open for signing requests the server has
/// received but not yet written, and for TLS handshakes in progress (agents about to
/// ask). Under load a flush then covers several times more certificates (each
/// `fdatasync` costs a few hundred µs of CPU); when every request in the server is
/// already waiting for the flush and no handshake is under way, it starts at once, so a
/// lone request or a light load never waits for the window.
const GATHER_MAX: Duration = Duration::from_millis(2);

/// What the committer has made durable.
#[derive(Clone, Debug, Default)]
struct Progress {
    /// Writes known durable (every ticket up to this one).
    durable: u64,
    /// The receipt of the flush that made them durable.
    receipt: Option<Arc<Flushed>>,
    /// The last flush failure and the newest ticket it covered: those writes are refused;
    /// later ones wait for the next attempt.
    failure: Option<(u64, String)>,
}

/// Hands out tickets for unsynced writes and reports when they are durable.
pub(crate) struct Committer {
    requested: AtomicU64,
    /// `progress.durable`, readable without the channel's lock.
    durable: AtomicU64,
    /// Signing requests received and not yet answered (see [`crate::inflight`]).
    in_flight: AtomicUsize,
    /// TLS handshakes in progress: on the CA's port nearly every new connection is an
    /// agent about to ask for a certificate, so a gathering flush counts them too.
    handshaking: AtomicUsize,
    /// Set while the commit thread holds a flush open.
    gathering: AtomicBool,
    /// [`GATHER_MAX`], but for tests.
    gather_max: Duration,
    metrics: Arc<ServerMetrics>,
    thread: OnceLock<Thread>,
    wake: Notify,
    progress: watch::Sender<Progress>,
}

/// A written, not yet durable, record's place in the flush order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

/// One received signing request, counted until it is dropped.
pub(crate) struct InFlight(Arc<Committer>);

impl Committer {
    /// Starts the flushing thread over `store`; it runs until the process exits.
    pub(crate) fn start(store: Arc<dyn Store>, metrics: Arc<ServerMetrics>) -> Arc<Self> {
        Self::start_gathering(store, metrics, GATHER_MAX)
    }

    fn start_gathering(
        store: Arc<dyn Store>,
        metrics: Arc<ServerMetrics>,
        gather_max: Duration,
    ) -> Arc<Self> {
        let committer = Arc::new(Self {
            requested: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            gathering: AtomicBool::new(false),
            gather_max,
            metrics,
            thread: OnceLock::new(),
            wake: Notify::new(),
            progress: watch::channel(Progress::default()).0,
        });
        let runtime = tokio::runtime::Handle::current();
        let c = committer.clone();
        std::thread::Builder::new()
            .name("writ-commit".into())
            .spawn(move || {
                let _ = c.thread.set(std::thread::current());
                c.run(store.as_ref(), &runtime)
            })
            .map(drop)
            .unwrap_or_else(|e| {
                // Without the thread nothing would ever become durable; fail loudly at
                // start-up rather than hang every request.
                panic!("cannot start the commit thread: {e}")
            });
        committer
    }

    fn run(&self, store: &dyn Store, runtime: &tokio::runtime::Handle) {
        loop {
            let durable = self.durable.load(Ordering::Acquire);
            if self.requested.load(Ordering::Acquire) <= durable {
                // `Notify` keeps a permit when nobody waits, so a ticket taken between
                // the load above and this wait is not missed.
                runtime.block_on(self.wake.notified());
                continue;
            }
            self.gather();
            // Read after gathering: a ticket is taken only once its record is written,
            // so everything up to here is covered by the flush below.
            let target = self.requested.load(Ordering::Acquire);
            let started = Instant::now();
            let result = Flushed::sync(store);
            self.metrics
                .flushed(target - durable, started.elapsed(), result.is_ok());
            if result.is_ok() {
                self.durable.fetch_max(target, Ordering::AcqRel);
            }
            self.progress.send_modify(|p| match result {
                Ok(receipt) => {
                    p.durable = p.durable.max(target);
                    p.receipt = Some(Arc::new(receipt));
                    p.failure = None;
                }
                Err(e) => p.failure = Some((target, e.to_string())),
            });
            if self.progress.borrow().failure.is_some() {
                // Do not spin on a failing disk.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Whether every signing request in the server has written its record: no one else
    /// could join the next flush without a new request from a client.
    fn all_written(&self) -> bool {
        // Durable first: both only grow and durable never passes requested, so this
        // cannot underflow.
        let durable = self.durable.load(Ordering::SeqCst);
        let waiting = self
            .requested
            .load(Ordering::SeqCst)
            .saturating_sub(durable);
        let expected =
            self.in_flight.load(Ordering::SeqCst) + self.handshaking.load(Ordering::SeqCst);
        waiting >= expected as u64
    }

    /// Holds the next flush open, at most `gather_max`, until every signing request in
    /// the server has written its record.
    fn gather(&self) {
        let deadline = Instant::now() + self.gather_max;
        self.gathering.store(true, Ordering::SeqCst);
        while !self.all_written() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.gathering.store(false, Ordering::SeqCst);
    }

    /// Lets a gathering flush go if the request just counted was the last one it waited for.
    fn nudge(&self) {
        if self.gathering.load(Ordering::SeqCst)
            && self.all_written()
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    /// Counts a signing request the server has just received, until the returned value
    /// is dropped with its answer.
    pub(crate) fn received(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Counts a TLS handshake in progress until the returned value is dropped.
    pub(crate) fn handshake(self: &Arc<Self>) -> Handshake {
        self.handshaking.fetch_add(1, Ordering::SeqCst);
        Handshake(self.clone())
    }

    /// Takes a ticket for a record just written (unsynced) to the store.
    pub(crate) fn written(&self) -> Ticket {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        self.nudge();
        Ticket(ticket)
    }

    /// Waits until everything written before this call is durable.
    #[cfg(test)]
    pub(crate) async fn durable(&self) -> Result<(), String> {
        self.wait(self.written()).await.map(drop)
    }

    /// Waits until the record behind `ticket` is durable, or its flush failed; returns the
    /// receipt of the flush that covered it.
    pub(crate) async fn wait(&self, ticket: Ticket) -> Result<Arc<Flushed>, String> {
        let Ticket(ticket) = ticket;
        let mut rx = self.progress.subscribe();
        let failed = |p: &Progress| {
            p.failure
                .as_ref()
                .filter(|(upto, _)| *upto >= ticket)
                .cloned()
        };
        let progress = rx
            .wait_for(|p| p.durable >= ticket || failed(p).is_some())
            .await
            .map_err(|_| "the commit thread stopped".to_owned())?;
        if progress.durable >= ticket
            && let Some(receipt) = &progress.receipt
        {
            return Ok(receipt.clone());
        }
        Err(failed(&progress).map_or_else(|| "not durable".into(), |(_, e)| e))
    }
}

/// One TLS handshake in progress, counted until dropped.
pub(crate) struct Handshake(Arc<Committer>);

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::SeqCst);
        self.0.nudge();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.nudge();
    }
}

#[cfg(test)]
mod tests {
    use writ_ca::Error;
    use writ_ca::store::{Entries, IssuanceRecord};

    use super::*;

    /// Counts syncs, and can be told to fail them.
    #[derive(Default)]
    struct Counting {
        syncs: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Store for Counting {
        fn get(&self, _: &str, _: &[u8]) -> Result<Option<Vec<u8>>, Error> {
            Ok(None)
        }
        fn put(&self, _: &str, _: &[u8], _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
        fn compare_and_swap(
            &self,
            _: &str,
            _: &[u8],
            _: Option<&[u8]>,
            _: Option<&[u8]>,
        ) -> Result<bool, Error> {
            Ok(true)
        }
        fn scan(&self, _: &str) -> Result<Entries, Error> {
            Ok(Vec::new())
        }
        fn record_issuance_unsynced(&self, _: &IssuanceRecord) -> Result<(), Error> {
            Ok(())
        }
        fn sync(&self) -> Result<(), Error> {
            std::thread::sleep(std::time::Duration::from_millis(5));
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::Storage("disk full".into()));
            }
            Ok(())
        }
        fn for_each_recent_issuance(
            &self,
            _: &mut dyn FnMut(IssuanceRecord) -> bool,
        ) -> Result<(), Error> {
            Ok(())
        }
        fn for_each_issuance(&self, _: &mut dyn FnMut(&IssuanceRecord)) -> Result<(), Error> {
            Ok(())
        }
        fn issuance_count(&self) -> Result<u64, Error> {
            Ok(0)
        }
        fn append_audit(
            &self,
            _: &writ_ca::audit::AuditEvent,
        ) -> Result<writ_ca::audit::AuditRecord, Error> {
            Err(Error::Storage("not in this test".into()))
        }
        fn for_each_audit(
            &self,
            _: u64,
            _: &mut dyn FnMut(Result<writ_ca::audit::AuditRecord, String>) -> bool,
        ) -> Result<(), Error> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_few_flushes_and_failures_reach_them() {
        let store = Arc::new(Counting::default());
        let metrics = Arc::new(ServerMetrics::new());
        let c = Committer::start(store.clone(), metrics.clone());
        let waits: Vec<_> = (0..200)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.durable().await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let syncs = store.syncs.load(Ordering::SeqCst);
        assert!((1..200).contains(&syncs), "{syncs} flushes for 200 writes");

        store.fail.store(true, Ordering::SeqCst);
        let err = c.durable().await.unwrap_err();
        assert!(err.contains("disk full"), "{err}");
        store.fail.store(false, Ordering::SeqCst);
        c.durable().await.unwrap();
        let flushes = |result: &'static str| metrics.commit_flushes_count(result);
        // The refused ticket is retried with the next one: one or two more flushes.
        assert!(flushes("ok") > syncs as u64, "{}", flushes("ok"));
        assert!(flushes("error") >= 1);
    }

    /// Far longer than any test runs: a flush that waited for the window would time out.
    const FOREVER: Duration = Duration::from_secs(3600);

    async fn within_a_minute<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("the flush waited for the gather window instead of the last writer")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_waits_for_every_received_request_then_goes_at_once() {
        let store = Arc::new(Counting::default());
        let c = Committer::start_gathering(store.clone(), Arc::new(ServerMetrics::new()), FOREVER);
        let received: Vec<_> = (0..3).map(|_| c.received()).collect();
        let first = c.written();
        // Two requests still signing: the flush is held for them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.syncs.load(Ordering::SeqCst), 0);
        let (second, third) = (c.written(), c.written());
        within_a_minute(async {
            for t in [first, second, third] {
                c.wait(t).await.unwrap();
            }
        })
        .await;
        assert_eq!(
            store.syncs.load(Ordering::SeqCst),
            1,
            "one flush for all three"
        );
        drop(received);
    }

    /// A TLS handshake in progress is, on the CA's port, an agent about to ask: a
    /// gathering flush waits for it as for a request, and goes once it ends without one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_waits_for_handshakes_in_progress() {
        let store = Arc::new(Counting::default());
        let syncs = || store.syncs.load(Ordering::SeqCst);
        let c = Committer::start_gathering(store.clone(), Arc::new(ServerMetrics::new()), FOREVER);
        let writer = c.received();
        let handshake = c.handshake();
        let first = c.written();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(syncs(), 0, "held for the handshake");
        // Its request arrives, then the handshake's count ends: held for that request.
        let asking = c.received();
        drop(handshake);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(syncs(), 0, "held for the request that followed");
        let second = c.written();
        within_a_minute(async {
            for t in [first, second] {
                c.wait(t).await.unwrap();
            }
        })
        .await;
        assert_eq!(syncs(), 1, "one flush for both");
        drop((writer, asking));

        // A connection that asks nothing lets the flush go once its handshake ends.
        let lone = c.received();
        let idle = c.handshake();
        let ticket = c.written();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(syncs(), 1);
        drop(idle);
        within_a_minute(c.wait(ticket)).await.unwrap();
        assert_eq!(syncs(), 2);
        drop(lone);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_never_writes_does_not_hold_the_flush() {
        let store = Arc::new(Counting::default());
        let c = Committer::start_gathering(store.clone(), Arc::new(ServerMetrics::new()), FOREVER);
        let (writer, refused) = (c.received(), c.received());
        let ticket = c.written();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Refused before writing (a policy error): its answer drops the count.
        drop(refused);
        within_a_minute(c.wait(ticket)).await.unwrap();
        drop(writer);
        // Nothing else in flight: the next write is flushed without gathering.
        let lone = c.received();
        within_a_minute(c.durable()).await.unwrap();
        drop(lone);
    }
}
