//! A TCP socket that may have been upgraded to TLS, for both directions:
//! clients connecting to pgsplit and pgsplit connecting to servers; on the
//! server side also a Unix socket, for a PostgreSQL on the same host.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

/// A plain or TLS stream over TCP, or a Unix socket; `T` is the TLS stream
/// type of the side.
pub enum MaybeTls<T> {
    /// No TLS was negotiated: bytes go over the socket as they are.
    Plain(TcpStream),
    /// A Unix-domain socket to a server on this host (never TLS, as
    /// PostgreSQL and libpq do not use it there).
    #[cfg(unix)]
    Unix(UnixStream),
    /// TLS was negotiated: bytes are encrypted over the socket.
    Tls(Box<T>),
    /// The socket was moved out for a TLS handshake; all I/O fails.
    Detached,
}

/// The Unix socket a node listens on when its `host` is an absolute path,
/// read as libpq reads it: the directory holding `.s.PGSQL.<port>`.
pub fn socket_path(host: &str, port: u16) -> Option<String> {
    host.starts_with('/')
        .then(|| format!("{}/.s.PGSQL.{port}", host.trim_end_matches('/')))
}

/// How a node's address is shown and dialled: the socket path, or
/// `host:port` (`[host]:port` for an IPv6 literal, so it parses back).
pub fn node_address(host: &str, port: u16) -> String {
    socket_path(host, port).unwrap_or_else(|| {
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    })
}

/// Opens a plain connection to `address` (as [`node_address`] wrote it),
/// writes `bytes` and closes it: how a cancel request reaches a server.
pub async fn send_once(address: &str, bytes: &[u8]) -> io::Result<()> {
    #[cfg(unix)]
    if address.starts_with('/') {
        return UnixStream::connect(address).await?.write_all(bytes).await;
    }
    TcpStream::connect(address).await?.write_all(bytes).await
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
        match self {
            MaybeTls::Plain(socket) => receive_available(socket, buf, make_room).await,
            #[cfg(unix)]
            MaybeTls::Unix(socket) => receive_available(socket, buf, make_room).await,
            other => {
                make_room(buf);
                other.read_buf(buf).await
            }
        }
    }
}

/// What [`receive_available`] and [`MaybeTls::send_all`] need of a plain
/// socket; tokio's TCP and Unix streams both have it.
pub(crate) trait PlainSocket: std::os::fd::AsFd {
    /// `poll_read_ready` of the tokio stream.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// `try_io` of the tokio stream, for one read attempt.
    fn try_read_with(&self, read: impl FnOnce() -> io::Result<usize>) -> io::Result<usize>;
    /// `try_write` of the tokio stream.
    fn try_send(&self, bytes: &[u8]) -> io::Result<usize>;
}

macro_rules! plain_socket {
    ($stream:ty) => {
        impl PlainSocket for $stream {
            fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.poll_read_ready(cx)
            }
            fn try_read_with(&self, read: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
                self.try_io(Interest::READABLE, read)
            }
            fn try_send(&self, bytes: &[u8]) -> io::Result<usize> {
                self.try_write(bytes)
            }
        }
    };
}

plain_socket!(TcpStream);
#[cfg(unix)]
plain_socket!(UnixStream);

/// Whether `socket` is still open with nothing unread. Without readiness
/// the runtime answers `WouldBlock` itself (no system call, no waker
/// stored); with it, a one-byte peek tells data or end of stream from a
/// spurious wake-up.
pub(crate) fn is_drained<S: PlainSocket>(socket: &S) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let peeked = socket.try_read_with(|| socket2::SockRef::from(socket).peek(&mut probe));
    matches!(peeked, Err(error) if error.kind() == io::ErrorKind::WouldBlock)
}

/// The plain-socket path of [`MaybeTls::read_available`]: one `recv`
/// straight into `buf`'s spare room.
async fn receive_available<S: PlainSocket>(
    socket: &S,
    buf: &mut BytesMut,
    make_room: impl Fn(&mut BytesMut),
) -> io::Result<usize> {
    // Readiness is polled, not awaited through `readable()`: that future
    // links itself into the socket's waiter list (a lock and an unlink
    // each time the session's `select!` drops it), while polling keeps
    // the task's waker in the socket's own reader slot.
    std::future::poll_fn(|cx| loop {
        std::task::ready!(socket.poll_readable(cx))?;
        // Only now: an idle client's buffer does not grow while it waits.
        make_room(buf);
        let mut received = 0;
        let attempt = socket.try_read_with(|| {
            let spare = buf.spare_capacity_mut();
            let room = spare.len();
            received = socket2::SockRef::from(socket).recv(spare)?;
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

impl<T: AsyncWrite + Unpin> MaybeTls<T> {
    /// Writes all of `bytes`. On a plain socket, which is nearly always
    /// writable, the first attempt is a direct `send`, without going
    /// through the runtime's write future; what it could not take is
    /// written the usual way.
    pub async fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let first = match self {
            MaybeTls::Plain(socket) => Some(socket.try_send(bytes)),
            #[cfg(unix)]
            MaybeTls::Unix(socket) => Some(socket.try_send(bytes)),
            _ => None,
        };
        let rest = match first {
            Some(Ok(sent)) => &bytes[sent..],
            Some(Err(error)) if error.kind() != io::ErrorKind::WouldBlock => return Err(error),
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
            #[cfg(unix)]
            MaybeTls::Unix(s) => Pin::new(s).poll_read(cx, buf),
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
            #[cfg(unix)]
            MaybeTls::Unix(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            MaybeTls::Unix(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            MaybeTls::Unix(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Detached => Poll::Ready(Err(detached())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absolute_host_is_a_socket_directory_as_in_libpq() {
        assert_eq!(
            socket_path("/var/run/postgresql", 5433).as_deref(),
            Some("/var/run/postgresql/.s.PGSQL.5433")
        );
        assert_eq!(
            node_address("/tmp/", 5432),
            "/tmp/.s.PGSQL.5432",
            "a trailing slash is not doubled"
        );
        assert_eq!(socket_path("db1", 5432), None);
        assert_eq!(node_address("10.0.0.7", 6000), "10.0.0.7:6000");
        assert_eq!(node_address("::1", 5432), "[::1]:5432");
    }
}
