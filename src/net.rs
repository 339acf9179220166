//! A socket that may have been upgraded to TLS, for both directions:
//! clients connecting to pgsplit over TCP, and pgsplit connecting to
//! servers over TCP or, for a PostgreSQL on the same host, a Unix socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

/// A plain or TLS stream; `T` is the TLS stream type of the side and `S`
/// its plain socket (TCP for clients, [`NodeSocket`] for servers).
pub enum MaybeTls<T, S = TcpStream> {
    /// No TLS was negotiated: bytes go over the socket as they are.
    Plain(S),
    /// TLS was negotiated: bytes are encrypted over the socket.
    Tls(Box<T>),
    /// The socket was moved out for a TLS handshake; all I/O fails.
    Detached,
}

/// The Unix socket a node listens on when its `host` is an absolute path,
/// read as libpq reads it: the directory holding `.s.PGSQL.<port>`.
pub fn socket_path(host: &str, port: u16) -> Option<String> {
    is_unix_path(host).then(|| format!("{}/.s.PGSQL.{port}", host.trim_end_matches('/')))
}

/// Whether a node's host or address names a Unix socket: an absolute path.
fn is_unix_path(host_or_address: &str) -> bool {
    host_or_address.starts_with('/')
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
    if is_unix_path(address) {
        return UnixStream::connect(address).await?.write_all(bytes).await;
    }
    TcpStream::connect(address).await?.write_all(bytes).await
}

/// A plain connection to a node: TCP, or a Unix socket on this host (never
/// TLS, as PostgreSQL does not offer it there). Only the server side pays
/// for the choice; clients' sockets are always TCP.
pub enum NodeSocket {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain socket connection.
    #[cfg(unix)]
    Unix(UnixStream),
}

/// Calls `$body` with `$socket` bound to whichever stream a [`NodeSocket`]
/// holds (the two have the same methods but no common trait).
macro_rules! on_node_socket {
    ($node:expr, $socket:ident => $body:expr) => {
        match $node {
            NodeSocket::Tcp($socket) => $body,
            #[cfg(unix)]
            NodeSocket::Unix($socket) => $body,
        }
    };
}

impl std::os::fd::AsFd for NodeSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        on_node_socket!(self, s => s.as_fd())
    }
}

impl PlainSocket for NodeSocket {
    #[inline]
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_node_socket!(self, s => s.poll_read_ready(cx))
    }
    #[inline]
    fn try_read_with(&self, read: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        on_node_socket!(self, s => s.try_io(Interest::READABLE, read))
    }
    #[inline]
    fn try_send(&self, bytes: &[u8]) -> io::Result<usize> {
        on_node_socket!(self, s => s.try_write(bytes))
    }
}

impl AsyncRead for NodeSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_node_socket!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for NodeSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_node_socket!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_node_socket!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_node_socket!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "socket is being upgraded to TLS",
    )
}

impl<T, S> MaybeTls<T, S> {
    /// Whether TLS was negotiated.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl<T: AsyncRead + Unpin, S: PlainSocket + AsyncRead + Unpin> MaybeTls<T, S> {
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
        // Readiness is polled, not awaited through `readable()`: that future
        // links itself into the socket's waiter list (a lock and an unlink
        // each time the session's `select!` drops it), while polling keeps
        // the task's waker in the socket's own reader slot.
        match self {
            MaybeTls::Plain(socket) => {
                std::future::poll_fn(|cx| poll_receive(socket, buf, &make_room, cx)).await
            }
            other => {
                make_room(buf);
                other.read_buf(buf).await
            }
        }
    }
}

/// What [`MaybeTls::read_available`] and [`MaybeTls::send_all`] need of a
/// plain socket, to read and write it without the runtime's I/O futures.
pub trait PlainSocket: std::os::fd::AsFd {
    /// `poll_read_ready` of the tokio stream.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// `try_io` of the tokio stream, for one read attempt.
    fn try_read_with(&self, read: impl FnOnce() -> io::Result<usize>) -> io::Result<usize>;
    /// `try_write` of the tokio stream.
    fn try_send(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl PlainSocket for TcpStream {
    #[inline]
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    #[inline]
    fn try_read_with(&self, read: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        self.try_io(Interest::READABLE, read)
    }
    #[inline]
    fn try_send(&self, bytes: &[u8]) -> io::Result<usize> {
        self.try_write(bytes)
    }
}

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
/// straight into `buf`'s spare room once the socket is readable.
fn poll_receive<S: PlainSocket>(
    socket: &S,
    buf: &mut BytesMut,
    make_room: &impl Fn(&mut BytesMut),
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
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
    }
}

impl<T: AsyncWrite + Unpin, S: PlainSocket + AsyncWrite + Unpin> MaybeTls<T, S> {
    /// Writes all of `bytes`. On a plain socket, which is nearly always
    /// writable, the first attempt is a direct `send`, without going
    /// through the runtime's write future; what it could not take is
    /// written the usual way.
    pub async fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let rest = match self {
            MaybeTls::Plain(socket) => unsent(socket.try_send(bytes), bytes)?,
            _ => bytes,
        };
        if rest.is_empty() {
            return Ok(());
        }
        self.write_all(rest).await
    }
}

/// What a direct `send` of `bytes` left to write the usual way.
#[inline]
fn unsent(sent: io::Result<usize>, bytes: &[u8]) -> io::Result<&[u8]> {
    match sent {
        Ok(sent) => Ok(&bytes[sent..]),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(bytes),
        Err(error) => Err(error),
    }
}

impl<T: AsyncRead + Unpin, S: AsyncRead + Unpin> AsyncRead for MaybeTls<T, S> {
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

impl<T: AsyncWrite + Unpin, S: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T, S> {
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
