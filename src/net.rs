//! A TCP socket that may have been upgraded to TLS, for both directions:
//! clients connecting to pgsplit and pgsplit connecting to servers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A plain or TLS stream over TCP; `T` is the TLS stream type of the side.
pub enum MaybeTls<T> {
    /// No TLS was negotiated: bytes go over the socket as they are.
    Plain(TcpStream),
    /// TLS was negotiated: bytes are encrypted over the socket.
    Tls(Box<T>),
    /// The socket was moved out for a TLS handshake; all I/O fails.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "socket is being upgraded to TLS",
    )
}

impl<T> MaybeTls<T> {
    /// Whether TLS was negotiated.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl<T: AsyncRead + Unpin> MaybeTls<T> {
    /// Reads what has arrived into `buf`, growing it by `chunk` when less
    /// than a quarter of that is free (on a plain socket only once data is
    /// there); `Ok(0)` is end of stream.
    /// Cancel-safe, so it can sit in a `select!`.
    ///
    /// On a plain socket, a read that returns fewer bytes than there was
    /// room for has drained the socket, and the runtime is told so at
    /// once. Otherwise the next read would be a `recv` returning only
    /// `WouldBlock`: one wasted system call per message each way, a fifth
    /// of a forwarded transaction's syscalls. (Data arriving in between
    /// is not missed: the runtime keeps readiness that a newer event set.)
    pub async fn read_available(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        let make_room = |buf: &mut BytesMut| {
            if buf.capacity() - buf.len() < chunk / 4 {
                buf.reserve(chunk);
            }
        };
        let socket = match self {
            MaybeTls::Plain(socket) => socket,
            other => {
                make_room(buf);
                return other.read_buf(buf).await;
            }
        };
        // Readiness is polled, not awaited through `readable()`: that future
        // links itself into the socket's waiter list (a lock and an unlink
        // each time the session's `select!` drops it), while polling keeps
        // the task's waker in the socket's own reader slot.
        std::future::poll_fn(|cx| loop {
            std::task::ready!(socket.poll_read_ready(cx))?;
            // Only now: an idle client's buffer does not grow while it waits.
            make_room(buf);
            let mut received = 0;
            let attempt = socket.try_io(Interest::READABLE, || {
                let spare = buf.spare_capacity_mut();
                let room = spare.len();
                received = socket2::SockRef::from(&*socket).recv(spare)?;
                if received > 0 && received < room {
                    // Drained: have the readiness cleared, as WouldBlock does.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(received)
            });
            if received > 0 {
                // SAFETY: `recv` initialised the first `received` bytes of
                // the spare capacity.
                unsafe { buf.set_len(buf.len() + received) };
                return Poll::Ready(Ok(received));
            }
            match attempt {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        })
        .await
    }
}

impl<T: AsyncWrite + Unpin> MaybeTls<T> {
    /// Writes all of `bytes`. On a plain socket, which is nearly always
    /// writable, the first attempt is a direct `send`, without going
    /// through the runtime's write future; what it could not take is
    /// written the usual way.
    pub async fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let rest = match self {
            MaybeTls::Plain(socket) => match socket.try_write(bytes) {
                Ok(sent) => &bytes[sent..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => bytes,
                Err(error) => return Err(error),
            },
            _ => bytes,
        };
        if rest.is_empty() {
            return Ok(());
        }
        self.write_all(rest).await
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }
}
