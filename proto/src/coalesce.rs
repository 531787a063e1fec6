//! Write coalescing between HTTP/2 and TLS, on both ends of every writ connection.
//!
//! Why: h2 hands each DATA payload over 256 bytes to its transport as a write of its own,
//! and flushes as soon as it has written what it had queued — on a busy server that is
//! after every answer, since each handler wakes the connection's task as it finishes.
//! Over rustls each flush became its own TLS records and `writev`: one system call per
//! renewal, when a group commit releases tens of answers at the same moment.
//!
//! [`Coalesced`] keeps writes in memory until a flush, and the first time it is asked to
//! flush it steps aside for one turn of the scheduler (the task wakes itself and yields).
//! Answers that became ready meanwhile join the same write; the next flush sends them all
//! as one run of TLS records in one system call. A lone answer waits one scheduler turn.
//!
//! An idle connection holds no buffer: it is released after each flush, so ten thousand
//! quiet bundle watchers cost nothing here.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes held before a flush forces them out: a busy connection's answers still leave in
/// a few large writes, and one stream's large message does not pile up in memory.
const HOLD_MAX: usize = 64 * 1024;

/// The first allocation for a connection's pending writes: a renewal's answer fits.
const INITIAL: usize = 4 * 1024;

/// A transport whose writes are gathered until [`AsyncWrite::poll_flush`].
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    pending: Vec<u8>,
    /// How much of `pending` the transport has accepted.
    sent: usize,
    /// Whether the task has already stepped aside once for this flush.
    yielded: bool,
}

impl<S> Coalesced<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
            yielded: false,
        }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Hands everything pending to the transport, then lets the buffer go.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes; `false` when they should bypass the buffer.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.pending.len() + len > HOLD_MAX {
            ready!(self.poll_drain(cx))?;
        }
        if len >= HOLD_MAX {
            return Poll::Ready(Ok(false));
        }
        if self.pending.capacity() == 0 {
            self.pending.reserve(len.max(INITIAL));
        }
        Poll::Ready(Ok(true))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !ready!(this.poll_room(cx, buf.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() && !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach the transport.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
        /// Accept at most this many bytes per write (a congested socket).
        max_per_write: Option<usize>,
        /// Refuse the next write with `Pending` once (a full socket buffer).
        pending_once: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if std::mem::take(&mut this.pending_once) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = this.max_per_write.map_or(buf.len(), |m| m.min(buf.len()));
            this.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_reach_the_transport_together_at_flush() {
        let mut c = Coalesced::new(Recorder::default());
        c.write_all(b"headers").await.unwrap();
        let n = c
            .write_vectored(&[IoSlice::new(b"-frame-"), IoSlice::new(b"payload")])
            .await
            .unwrap();
        assert_eq!(n, 14, "a vectored write is taken whole");
        c.write_all(b"-trailers").await.unwrap();
        assert!(c.inner.writes.is_empty(), "nothing leaves before the flush");
        c.flush().await.unwrap();
        assert_eq!(c.inner.writes, [b"headers-frame-payload-trailers".to_vec()]);
        assert_eq!(c.inner.flushes, 1);
        assert_eq!(
            c.pending.capacity(),
            0,
            "an idle connection holds no buffer"
        );
    }

    /// Counts how often the task asked to be polled again.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_flush_steps_aside_once_so_answers_ready_meanwhile_share_its_write() {
        let wakes = std::sync::Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::default());
        let mut c = Pin::new(&mut c);
        assert!(c.as_mut().poll_write(&mut cx, b"first").is_ready());
        assert!(c.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(c.inner.writes.is_empty() && c.inner.flushes == 0);
        assert!(c.as_mut().poll_write(&mut cx, b"+second").is_ready());
        assert!(c.as_mut().poll_flush(&mut cx).is_ready());
        assert_eq!(c.inner.writes, [b"first+second".to_vec()]);
        assert_eq!(c.inner.flushes, 1);
        // Nothing pending: a flush goes straight through, without a turn.
        assert!(c.as_mut().poll_flush(&mut cx).is_ready());
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(c.inner.flushes, 2);
    }

    #[tokio::test]
    async fn a_partial_or_refused_write_resumes_where_it_stopped() {
        let mut c = Coalesced::new(Recorder {
            max_per_write: Some(5),
            pending_once: true,
            ..Recorder::default()
        });
        c.write_all(b"0123456789abc").await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(c.inner.writes.concat(), b"0123456789abc");
        assert_eq!(c.inner.writes.len(), 3);
    }

    #[tokio::test]
    async fn a_full_buffer_goes_out_before_more_is_taken_and_large_writes_pass_through() {
        let mut c = Coalesced::new(Recorder::default());
        let chunk = vec![7u8; HOLD_MAX / 2 + 1];
        c.write_all(&chunk).await.unwrap();
        c.write_all(&chunk).await.unwrap();
        assert_eq!(c.inner.writes.len(), 1, "the first chunk left to make room");
        let large = vec![9u8; HOLD_MAX];
        c.write_all(&large).await.unwrap();
        assert_eq!(
            c.inner.writes.len(),
            3,
            "pending first, then the large write itself"
        );
        assert_eq!(c.inner.writes[2], large);
        c.flush().await.unwrap();
        assert_eq!(c.inner.writes.len(), 3);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_pending_first() {
        let mut c = Coalesced::new(Recorder::default());
        c.write_all(b"last words").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(c.inner.writes, [b"last words".to_vec()]);
        assert!(c.inner.shut);
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut c = Coalesced::new(a);
        b.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        c.write_all(b"pong").await.unwrap();
        c.flush().await.unwrap();
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
