//! Captured guest stdout/stderr: a bounded buffer the guest writes into, drained into the host
//! log after each call. Writes past the bound are accepted and discarded, so a chatty guest
//! neither grows host memory nor fails (Rust's `print!` panics on a write error).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::sync::lock;

/// A bounded in-memory sink shared by a store's stdout and stderr.
#[derive(Clone, Debug)]
pub struct CapturedOutput {
    /// What the guest wrote, up to `max` bytes.
    buf: Arc<Mutex<Vec<u8>>>,
    /// The bound, bytes.
    max: usize,
}

impl CapturedOutput {
    /// A sink keeping at most `max` bytes.
    pub fn new(max: usize) -> Self {
        CapturedOutput {
            buf: Arc::new(Mutex::new(Vec::new())),
            max,
        }
    }

    /// Takes what was written so far, leaving the sink empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *lock(&self.buf))
    }

    fn append(&self, data: &[u8]) {
        let mut buf = lock(&self.buf);
        let room = self.max.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
