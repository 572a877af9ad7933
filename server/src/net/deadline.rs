//! A deadline on a connection's request headers: a client that has not sent
//! a whole header block (up to the blank line) within `HEADER_TIMEOUT` of
//! connecting is cut off. Without it, a client dripping its upgrade request
//! a byte at a time would hold a socket and a task for as long as it liked
//! (axum's server sets no header timeout of its own).
//!
//! The listener hands out its connections wrapped in `Deadlined`, which
//! watches the bytes read for the end of the first header block; once seen,
//! the deadline is gone and reads pass straight through (the WebSocket that
//! follows an upgrade reads through it at the cost of one branch).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a client may take to send its first request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener whose connections must send their headers in time.
#[derive(Debug)]
pub struct HeaderDeadline<L> {
    inner: L,
    timeout: Duration,
}

impl<L> HeaderDeadline<L> {
    /// Wrap `inner`, giving each connection `timeout` for its headers.
    #[must_use]
    pub fn new(inner: L, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<L: Listener> Listener for HeaderDeadline<L> {
    type Io = Deadlined<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (Deadlined::new(io, self.timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that must deliver a whole header block before its deadline.
#[derive(Debug)]
pub struct Deadlined<T> {
    io: T,
    /// Until the headers are complete.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How much of `\r\n\r\n` the bytes read so far end with (0 to 3).
    matched: usize,
}

impl<T> Deadlined<T> {
    fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            matched: 0,
        }
    }

    /// The connection inside.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The connection inside, taken out (after an upgrade, its headers
    /// are long complete).
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Follow `bytes` through the header terminator; true once it is complete.
    fn saw_end_of_headers(&mut self, bytes: &[u8]) -> bool {
        const END: &[u8; 4] = b"\r\n\r\n";
        for &b in bytes {
            self.matched = if b == END[self.matched] {
                self.matched + 1
            } else if b == END[0] {
                1
            } else {
                0
            };
            if self.matched == END.len() {
                return true;
            }
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlined<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request headers not sent in time",
                )));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.deadline.is_some() && this.saw_end_of_headers(&buf.filled()[before..]) {
            this.deadline = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlined<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_end_of_the_headers_is_found_across_reads() {
        let mut d = Deadlined::new((), Duration::from_secs(1));
        assert!(!d.saw_end_of_headers(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!d.saw_end_of_headers(b"\n"));
        assert!(!d.saw_end_of_headers(b"\r"));
        assert!(d.saw_end_of_headers(b"\nbody"));
        let mut d = Deadlined::new((), Duration::from_secs(1));
        assert!(!d.saw_end_of_headers(b"a\r\n\r\r\n"));
        assert!(d.saw_end_of_headers(b"\r\n"));
    }

    #[tokio::test]
    async fn a_slow_sender_is_cut_off_and_a_prompt_one_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let timeout = Duration::from_millis(200);
        let (mut client, server) = tokio::io::duplex(1024);
        let mut slow = Deadlined::new(server, timeout);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(slow.read(&mut buf).await.is_ok());
        let err = slow.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(1024);
        let mut prompt = Deadlined::new(server, timeout);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(prompt.read(&mut buf).await.is_ok());
        tokio::time::sleep(timeout * 2).await;
        client.write_all(b"frame").await.unwrap();
        assert_eq!(prompt.read(&mut buf).await.unwrap(), 5);
    }
}
