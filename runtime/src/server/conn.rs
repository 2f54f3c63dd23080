//! One client connection's deadlines: the request head, the keep-alive wait between requests
//! and a response write that makes no progress. A watchdog future resolves when one passes;
//! the listener then drops the connection, which closes the socket and drops whatever the
//! request still holds (a relayed stream's upstream connection, stage instances, its budget
//! reservation: each is settled by its own `Drop`).
//!
//! Why not hyper's `header_read_timeout`: hyper 1.x (`proto/h1/conn.rs`, `poll_read_head`)
//! starts that timer as soon as the connection waits for a head, which for a keep-alive
//! connection is right after the previous response. Its header timeout is therefore also its
//! idle timeout, and a 10 s head bound would close every keep-alive connection after 10 s of
//! quiet. (Without `Builder::timer` it is not active at all.) So weir tracks the phases
//! itself, from what it sees on the socket and in the service:
//!
//! - *head*: from the accept (first request) or the first byte after an idle wait, until
//!   hyper hands the parsed head to the service: `header_read_timeout`;
//! - *busy*: from the service call until hyper drops the response body (fully written to the
//!   connection's buffer): no connection deadline (the body read has its own, in
//!   `http_util::read_body`; upstream calls have theirs);
//! - *idle*: from then until the next byte arrives: `idle_timeout`;
//! - and in any phase, a socket write pending (the client's window is full) for
//!   `write_timeout` without a byte getting through.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::http_util::Body;
use crate::config::ConnectionLimits;
use crate::sync::lock;

/// Which deadline closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The request head did not arrive in time.
    HeaderRead,
    /// No request came within the idle timeout.
    Idle,
    /// A response write made no progress within the write timeout.
    Write,
}

impl Expiry {
    /// The reason label of `weir_connections_closed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::HeaderRead => "header_timeout",
            Expiry::Idle => "idle_timeout",
            Expiry::Write => "write_timeout",
        }
    }
}

/// What the connection waits for, as far as its deadlines care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// A request head, since then.
    Head(Instant),
    /// The next request, since then (keep-alive).
    Idle(Instant),
    /// Nothing: a request is in progress.
    Nothing,
}

/// The connection's phase, shared by the socket wrapper, the service and the watchdog.
#[derive(Debug)]
struct Phase {
    /// Requests in progress (service called, response body not yet dropped).
    busy: usize,
    /// What the connection waits for.
    waiting: Waiting,
    /// Since when a socket write has been pending without progress.
    write_blocked_since: Option<Instant>,
}

/// State shared between the pieces of one connection.
#[derive(Debug)]
struct Shared {
    /// The connection's bounds (taken from the config snapshot at accept).
    limits: ConnectionLimits,
    /// The current phase.
    phase: Mutex<Phase>,
    /// Wakes the watchdog when a deadline may have moved earlier.
    changed: Notify,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Phase) -> R) -> R {
        let mut phase = lock(&self.phase);
        f(&mut phase)
    }

    /// The earliest deadline in force, and what it bounds.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        let limits = self.limits;
        self.with(|phase| {
            let wait = match phase.waiting {
                Waiting::Head(since) => {
                    Some((since + limits.header_read_timeout, Expiry::HeaderRead))
                }
                Waiting::Idle(since) => Some((since + limits.idle_timeout, Expiry::Idle)),
                Waiting::Nothing => None,
            };
            let write = phase
                .write_blocked_since
                .map(|since| (since + limits.write_timeout, Expiry::Write));
            match (wait, write) {
                (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                (a, b) => a.or(b),
            }
        })
    }

    /// Bytes arrived: after an idle wait they start the next request's head.
    fn on_read(&self) {
        let started = self.with(|phase| {
            if phase.busy == 0 && matches!(phase.waiting, Waiting::Idle(_)) {
                phase.waiting = Waiting::Head(Instant::now());
                true
            } else {
                false
            }
        });
        if started {
            self.changed.notify_one();
        }
    }

    /// A socket write returned: `Pending` starts the write clock, progress stops it.
    fn on_write<T>(&self, result: &Poll<io::Result<T>>, progressed: impl FnOnce(&T) -> bool) {
        match result {
            Poll::Pending => {
                let started = self.with(|phase| {
                    if phase.write_blocked_since.is_none() {
                        phase.write_blocked_since = Some(Instant::now());
                        true
                    } else {
                        false
                    }
                });
                if started {
                    self.changed.notify_one();
                }
            }
            Poll::Ready(Ok(value)) if progressed(value) => {
                self.with(|phase| phase.write_blocked_since = None);
            }
            Poll::Ready(_) => {}
        }
    }
}

/// The deadlines of one accepted connection.
#[derive(Clone, Debug)]
pub struct ConnWatch(Arc<Shared>);

impl ConnWatch {
    /// A connection accepted now, waiting for its first request head.
    pub fn new(limits: ConnectionLimits) -> ConnWatch {
        ConnWatch(Arc::new(Shared {
            limits,
            phase: Mutex::new(Phase {
                busy: 0,
                waiting: Waiting::Head(Instant::now()),
                write_blocked_since: None,
            }),
            changed: Notify::new(),
        }))
    }

    /// Wraps the connection's socket so that reads and writes move the deadlines.
    pub fn io<S>(&self, inner: S) -> Watched<S> {
        Watched {
            inner,
            shared: self.0.clone(),
        }
    }

    /// A request head was parsed: the connection is busy until the returned guard is
    /// dropped (wrap the response body with [`InRequest::guard`]).
    pub fn begin_request(&self) -> InRequest {
        self.0.with(|phase| {
            phase.busy = phase.busy.saturating_add(1);
            phase.waiting = Waiting::Nothing;
        });
        InRequest(self.0.clone())
    }

    /// Runs the connection future `conn` under the deadlines: its output, or which deadline
    /// passed first (then `conn` is dropped by the caller, closing the socket).
    ///
    /// Every phase change happens inside `conn`'s own poll (hyper reads, calls the service,
    /// drops the response body and writes on the connection's task), so the deadline is
    /// re-read right after each poll of `conn` and no wake-up is needed to learn of it. That
    /// keeps the request path free of extra task wake-ups (a `Notify` waiter woken from
    /// inside the task's own poll reschedules it and unparks another worker: measured as
    /// +1.4 context switches per request). One timer per connection, re-armed only when the
    /// deadline moves earlier; a later one lets the armed timer fire early and re-arm.
    ///
    /// `conn` is polled through [`SelfWake`]: hyper wakes the connection's task from inside
    /// its own poll on every request with a body (the service's first read of the body asks
    /// hyper's dispatcher, on the same task, for it), and tokio answers a task woken while it
    /// runs by queueing it behind the others and unparking an idle worker to steal it. The
    /// wrapper polls `conn` again at once instead, up to [`SelfWake::REPOLLS`] times.
    pub async fn run<F: std::future::Future>(&self, conn: F) -> Result<F::Output, Expiry> {
        let mut conn = std::pin::pin!(conn);
        let mut sleep = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
        let mut armed: Option<Instant> = None;
        let self_wake = SelfWake::new();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = self_wake.poll(conn.as_mut(), cx) {
                return Poll::Ready(Ok(output));
            }
            loop {
                let next = self.0.deadline();
                if let Some((at, why)) = next {
                    if at <= Instant::now() {
                        return Poll::Ready(Err(why));
                    }
                    if armed.is_none_or(|armed| at < armed) {
                        sleep.as_mut().reset(at);
                        armed = Some(at);
                    }
                }
                if armed.is_none() {
                    return Poll::Pending;
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Fired: either the deadline passed (the loop returns it) or it was a
                    // stale, earlier one (the loop re-arms for the current deadline).
                    Poll::Ready(()) => {
                        armed = None;
                        if next.is_none() {
                            return Poll::Pending;
                        }
                    }
                }
            }
        })
        .await
    }

    /// Resolves when a deadline in force passes, with which one. Learns of phase changes
    /// made elsewhere through a `Notify` (tests drive phases from other tasks); connections
    /// use [`ConnWatch::run`], which needs no wake-ups.
    ///
    /// One timer per connection, re-armed only when a deadline moves *earlier*: a request
    /// on a keep-alive connection moves it earlier once (idle → head) and later once (busy →
    /// idle); the later move just lets the armed timer fire early and re-arm, so the request
    /// path pays one timer update per request, not a timer created and dropped per phase.
    #[cfg(test)]
    pub async fn expired(&self) -> Expiry {
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let notified = self.0.changed.notified();
            match self.0.deadline() {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) if armed.is_none_or(|armed| at < armed) => {
                    sleep.as_mut().reset(at);
                    armed = Some(at);
                }
                _ => {}
            }
            if armed.is_some() {
                tokio::select! {
                    () = &mut sleep => armed = None,
                    () = notified => {}
                }
            } else {
                notified.await;
            }
        }
    }
}

/// Polls a future so that a wake-up it gives itself *during* that poll re-polls it at once,
/// in the same turn of its task, instead of reaching tokio: there, a task woken while it runs
/// goes to the back of its worker's queue and another worker is unparked to steal it (a
/// futex wake and a context switch, then the task runs on the other core). Wakes from
/// outside the poll go to the task as usual. After [`SelfWake::REPOLLS`] re-polls in one
/// turn the wake is passed on, so a future that keeps waking itself still yields to others.
struct SelfWake {
    /// The flags and the task's waker, shared with the waker handed to the future.
    state: Arc<WakeState>,
    /// The waker handed to the future: one per connection.
    waker: std::task::Waker,
}

/// [`SelfWake`]'s shared part.
#[derive(Default)]
struct WakeState {
    /// The future is being polled.
    polling: std::sync::atomic::AtomicBool,
    /// A wake arrived since the current poll began.
    woken: std::sync::atomic::AtomicBool,
    /// The waker of the task that polls the future.
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WakeState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        // The flag first: a poll that ends between the two lines sees it and polls again
        // (the task may then also be woken once, which costs a spurious poll, never a lost
        // wake).
        self.woken.store(true, SeqCst);
        if !self.polling.load(SeqCst) {
            self.task.wake();
        }
    }
}

impl SelfWake {
    /// Most re-polls in one turn of the task.
    const REPOLLS: usize = 4;

    fn new() -> SelfWake {
        let state = Arc::new(WakeState::default());
        let waker = std::task::Waker::from(state.clone());
        SelfWake { state, waker }
    }

    /// Polls `future` on behalf of the task whose context is `cx`.
    fn poll<F: std::future::Future>(
        &self,
        mut future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..=Self::REPOLLS {
            // A wake before the future's poll begins is answered by that poll.
            self.state.woken.store(false, SeqCst);
            self.state.polling.store(true, SeqCst);
            let result = future.as_mut().poll(&mut inner);
            self.state.polling.store(false, SeqCst);
            if result.is_ready() || !self.state.woken.load(SeqCst) {
                return result;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A request in progress on a connection; dropping it (with the response body) starts the
/// connection's idle wait.
#[derive(Debug)]
pub struct InRequest(Arc<Shared>);

impl InRequest {
    /// `body`, keeping the request in progress until hyper drops it (written or abandoned).
    pub fn guard(self, body: Body) -> Guarded {
        Guarded {
            body,
            _request: self,
        }
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let idle = self.0.with(|phase| {
            phase.busy = phase.busy.saturating_sub(1);
            if phase.busy == 0 {
                phase.waiting = Waiting::Idle(Instant::now());
                true
            } else {
                false
            }
        });
        if idle {
            self.0.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in progress until it is dropped.
pub struct Guarded {
    /// The response body.
    body: Body,
    /// Ends the request when dropped.
    _request: InRequest,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket whose reads and writes move its deadlines.
#[derive(Debug)]
pub struct Watched<S> {
    /// The socket.
    inner: S,
    /// The connection's phase.
    shared: Arc<Shared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.shared.on_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.shared.on_write(&result, |n| *n > 0);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.shared.on_write(&result, |n| *n > 0);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.shared.on_write(&result, |_| false);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 1,
        }
    }

    /// How long `watch.expired()` takes on paused time, and why.
    async fn expiry_after(watch: &ConnWatch) -> (Duration, Expiry) {
        let started = Instant::now();
        let why = watch.expired().await;
        (started.elapsed(), why)
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_gets_the_header_timeout() {
        let watch = ConnWatch::new(limits());
        assert_eq!(
            expiry_after(&watch).await,
            (Duration::from_secs(10), Expiry::HeaderRead)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn run_ends_a_silent_connection_at_the_header_timeout_and_a_quiet_one_at_idle() {
        let watch = ConnWatch::new(limits());
        let started = Instant::now();
        let silent = watch.run(std::future::pending::<()>()).await;
        assert_eq!(silent, Err(Expiry::HeaderRead));
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        // A connection whose one request ends inside its own poll (as hyper drops the
        // response body), then stays quiet: the stale head timer re-arms for the idle one.
        let watch = ConnWatch::new(limits());
        let inner = watch.clone();
        let started = Instant::now();
        let quiet = watch
            .run(async move {
                drop(inner.begin_request());
                std::future::pending::<()>().await;
            })
            .await;
        assert_eq!(quiet, Err(Expiry::Idle));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        // A finished connection is its output.
        assert_eq!(watch.run(async { 7 }).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_has_no_deadline_and_its_end_starts_the_idle_wait() {
        let watch = ConnWatch::new(limits());
        let request = watch.begin_request();
        let waiter = watch.clone();
        let expired = tokio::spawn(async move { expiry_after(&waiter).await });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!expired.is_finished(), "no deadline while busy");
        drop(request);
        let (elapsed, why) = expired.await.unwrap();
        assert_eq!(why, Expiry::Idle);
        assert_eq!(elapsed, Duration::from_secs(3600 + 60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_after_an_idle_wait_starts_the_header_timeout() {
        let watch = ConnWatch::new(limits());
        drop(watch.begin_request());
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = watch.io(server);
        let waiter = watch.clone();
        let expired = tokio::spawn(async move { expiry_after(&waiter).await });
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 8];
        io.read_exact(&mut buf).await.unwrap();
        let (elapsed, why) = expired.await.unwrap();
        assert_eq!(why, Expiry::HeaderRead);
        assert_eq!(elapsed, Duration::from_secs(30 + 10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_expires_and_progress_resets_it() {
        let watch = ConnWatch::new(limits());
        let _request = watch.begin_request();
        let (mut client, server) = tokio::io::duplex(16);
        let io = watch.io(server);
        let writer = tokio::spawn(async move {
            let mut io: Watched<DuplexStream> = io;
            let _ = io.write_all(&[7u8; 128]).await;
        });
        let waiter = watch.clone();
        let expired = tokio::spawn(async move { expiry_after(&waiter).await });
        // The client reads a little every 20 s: the write keeps making progress.
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            client.read_exact(&mut buf).await.unwrap();
        }
        assert!(!expired.is_finished(), "progress resets the write clock");
        // Then it stops reading: 16 bytes fit the pipe, the rest never go out.
        let (elapsed, why) = expired.await.unwrap();
        assert_eq!(why, Expiry::Write);
        assert!(
            elapsed >= Duration::from_secs(60 + 30) && elapsed <= Duration::from_secs(60 + 31),
            "{elapsed:?}"
        );
        writer.abort();
    }

    /// Counts the wakes of the task that polls through a [`SelfWake`].
    #[derive(Default)]
    struct TaskWakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for TaskWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl TaskWakes {
        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A task's wake counter and its waker.
    fn task() -> (Arc<TaskWakes>, std::task::Waker) {
        let task = Arc::new(TaskWakes::default());
        (task.clone(), std::task::Waker::from(task))
    }

    /// A future that wakes itself during each of its first `self_wakes` polls, then is
    /// ready; it counts its polls.
    struct WakesItself {
        self_wakes: usize,
        polls: usize,
    }

    impl std::future::Future for WakesItself {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.self_wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_from_inside_the_poll_polls_again_without_waking_the_task() {
        let (task, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let self_wake = SelfWake::new();
        let mut future = std::pin::pin!(WakesItself {
            self_wakes: 2,
            polls: 0
        });
        assert_eq!(self_wake.poll(future.as_mut(), &mut cx), Poll::Ready(3));
        assert_eq!(task.count(), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_still_yields_to_its_task() {
        let (task, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let self_wake = SelfWake::new();
        let mut future = std::pin::pin!(WakesItself {
            self_wakes: usize::MAX,
            polls: 0
        });
        assert_eq!(self_wake.poll(future.as_mut(), &mut cx), Poll::Pending);
        assert_eq!(future.polls, SelfWake::REPOLLS + 1);
        assert_eq!(task.count(), 1, "passed on once");
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let (task, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let self_wake = SelfWake::new();
        // A future that keeps its waker and is woken later, from elsewhere.
        let kept: Arc<Mutex<Option<std::task::Waker>>> = Arc::default();
        let slot = kept.clone();
        let mut future = std::pin::pin!(std::future::poll_fn(move |cx| {
            *lock(&slot) = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        assert_eq!(self_wake.poll(future.as_mut(), &mut cx), Poll::Pending);
        assert_eq!(task.count(), 0);
        let later = lock(&kept).take().unwrap();
        std::thread::spawn(move || later.wake()).join().unwrap();
        assert_eq!(task.count(), 1);
    }
}
