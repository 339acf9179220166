//! The client socket, plain or TLS, behind one type.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection after (optional) TLS negotiation.
pub type ClientStream = crate::net::MaybeTls<TlsStream<TcpStream>>;
