//! One logged-in server connection, spoken to in raw protocol messages.

use std::collections::{BTreeMap, HashMap};

/// Setting key → the statement that establishes it (see `frontend::settings`).
/// Shared: a connection records the very map its last client had, so that
/// when that client (or a clone of its settings) comes back, comparing the
/// two is a pointer check.
pub type AppliedSettings = Arc<BTreeMap<String, String>>;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pool::PoolSettings;
use super::prepared::PreparedSet;
use super::tls::{is_quiet, ServerStream, ServerTls};
use crate::config::ServerTlsMode;
use crate::net::{node_address, socket_path, NodeSocket};
use crate::protocol::frame::{self, Frame};
use crate::protocol::md5::Md5Hash;
use crate::protocol::messages::{self, read_cstr, read_i32};
use crate::protocol::scram::{ScramClient, ScramSecret, MECHANISM};

/// Where and as whom a pool logs in.
#[derive(Debug, Clone)]
pub struct LoginTarget {
    /// The node's name from the config, for errors and logs.
    pub node_name: String,
    /// Host name or IP address to connect to.
    pub host: String,
    /// TCP port to connect to.
    pub port: u16,
    /// The database the connections open, as the pool's clients asked.
    pub database: String,
    /// The role the connections log in as, the pool's clients' own.
    pub user: String,
    /// How to prove the user's password; `None` while pgsplit has only a
    /// verifier and no client has logged in with SCRAM yet.
    pub secret: Option<ServerSecret>,
}

/// How pgsplit proves a user's password to a node.
#[derive(Debug, Clone)]
pub enum ServerSecret {
    /// A password or SCRAM keys; a password also answers md5 and
    /// clear-text requests.
    Scram(ScramSecret),
    /// A stored md5 hash: it answers md5 requests only.
    Md5(Md5Hash),
}

impl LoginTarget {
    /// The plain password, for servers that ask for it in clear text.
    fn password(&self) -> Result<&str, ConnectError> {
        match &self.secret {
            Some(ServerSecret::Scram(ScramSecret::Password(password))) => Ok(password),
            _ => Err(self.cannot_answer("the password in clear text")),
        }
    }

    /// The answer to an md5 request with `salt`.
    fn md5_answer(&self, salt: [u8; 4]) -> Result<String, ConnectError> {
        match &self.secret {
            Some(ServerSecret::Scram(ScramSecret::Password(password))) => {
                Ok(Md5Hash::of_password(&self.user, password).salted(salt))
            }
            Some(ServerSecret::Md5(hash)) => Ok(hash.salted(salt)),
            _ => Err(self.cannot_answer("an md5 password")),
        }
    }

    /// What answers a SCRAM-SHA-256 exchange.
    fn scram_secret(&self) -> Result<ScramSecret, ConnectError> {
        match &self.secret {
            Some(ServerSecret::Scram(secret)) => Ok(secret.clone()),
            _ => Err(self.cannot_answer("SCRAM-SHA-256")),
        }
    }

    /// The server asked for `request`, which what pgsplit holds instead of
    /// the password cannot answer.
    fn cannot_answer(&self, request: &str) -> ConnectError {
        let held = match &self.secret {
            Some(ServerSecret::Md5(_)) => "an md5 hash of the password",
            Some(ServerSecret::Scram(_)) => "SCRAM keys",
            None => "a SCRAM verifier, until a client logs in with SCRAM",
        };
        ConnectError::Protocol {
            node: self.node_name.clone(),
            detail: format!(
                "cannot log in as \"{}\": the server asks for {request}, but pgsplit has only {held}",
                self.user
            ),
        }
    }
}

/// Why a server connection could not be opened. Cloneable, so a pool can
/// hand the last failure to clients during `server_login_retry`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection could not be opened or set up.
    #[error("could not connect to server \"{node}\" ({address}): {source}")]
    Io {
        /// The node's name from the config.
        node: String,
        /// The `host:port` pgsplit tried.
        address: String,
        /// The socket error; shared, so the error stays cloneable.
        source: std::sync::Arc<io::Error>,
    },
    /// Connecting and logging in took longer than `server_connect_timeout`.
    #[error("timed out connecting to server \"{node}\" ({address})")]
    Timeout {
        /// The node's name from the config.
        node: String,
        /// The `host:port` pgsplit tried.
        address: String,
    },
    /// The server refused the login; the `ErrorResponse` is relayed as is.
    #[error("server \"{node}\" refused the login")]
    Refused {
        /// The node's name from the config.
        node: String,
        /// The server's `ErrorResponse`, whole.
        error: Frame,
    },
    /// TLS set-up or login went wrong: an unexpected message, a failed
    /// handshake, or a password request pgsplit holds no answer for.
    #[error("server \"{node}\" broke the protocol during login: {detail}")]
    Protocol {
        /// The node's name from the config.
        node: String,
        /// What went wrong, for the error message.
        detail: String,
    },
}

/// What a query pgsplit ran itself returned.
#[derive(Debug, Default)]
pub struct QueryOutcome {
    /// The first column of the first row, unless NULL.
    pub first_value: Option<Vec<u8>>,
    /// The first `ErrorResponse`.
    pub error: Option<Frame>,
}

impl ConnectError {
    /// Whether the server could not be reached at all (as opposed to
    /// refusing the login), so it may be back, or replaced, shortly.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConnectError::Io { .. } | ConnectError::Timeout { .. })
    }
}

/// How much a server read asks for at least: a result set arrives in
/// large pieces.
const SERVER_READ_CHUNK: usize = 16 * 1024;

/// A logged-in connection plus what pgsplit knows of its state.
pub struct ServerConnection {
    stream: ServerStream,
    read_buf: BytesMut,
    max_message_size: usize,
    /// The server's backend key, for forwarding cancel requests.
    pub process_id: i32,
    /// The secret half of that key (`BackendKeyData`).
    pub secret_key: i32,
    /// `host:port` or the Unix socket path, where cancel requests for this
    /// connection go.
    pub address: Arc<str>,
    /// The run-time parameters the server last reported.
    pub parameters: HashMap<String, String>,
    /// Names of the pooled prepared statements that exist on this connection.
    pub prepared: PreparedSet,
    /// The client session settings currently applied; `None` when unknown
    /// (after a rollback that may have undone some), forcing a full reset.
    pub applied_settings: Option<AppliedSettings>,
    created: Instant,
    /// When it last went back to its pool.
    returned_at: Instant,
    /// When it stops being fit to hand out: its idle timeout or its
    /// lifetime, whichever ends first, set each time it goes back to its
    /// pool (`None`: never, for limits too large to count in an `Instant`).
    expires_at: Option<Instant>,
}

impl ServerConnection {
    /// Connects and logs in, answering SCRAM-SHA-256, md5 or cleartext
    /// password requests with the target's credentials.
    pub async fn connect(
        target: &LoginTarget,
        settings: &PoolSettings,
    ) -> Result<ServerConnection, ConnectError> {
        let address = node_address(&target.host, target.port);
        let login = async {
            let stream = open_stream(
                &target.host,
                target.port,
                &target.node_name,
                settings.tls.as_ref(),
                settings.tcp_user_timeout,
            )
            .await?;
            let mut conn = ServerConnection {
                stream,
                read_buf: BytesMut::with_capacity(16 * 1024),
                max_message_size: settings.max_message_size,
                process_id: 0,
                secret_key: 0,
                address: Arc::from(address.as_str()),
                parameters: HashMap::new(),
                prepared: PreparedSet::default(),
                applied_settings: Some(AppliedSettings::default()),
                created: Instant::now(),
                returned_at: Instant::now(),
                // Judged only once idle, and `touch` sets it on the way there.
                expires_at: None,
            };
            conn.login(target).await?;
            Ok(conn)
        };
        match tokio::time::timeout(settings.connect_timeout, login).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                node: target.node_name.clone(),
                address,
            }),
        }
    }

    async fn login(&mut self, target: &LoginTarget) -> Result<(), ConnectError> {
        let protocol = |detail: String| ConnectError::Protocol {
            node: target.node_name.clone(),
            detail,
        };
        let io = |e: io::Error| protocol(e.to_string());
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", target.user.as_str()),
                ("database", target.database.as_str()),
            ],
            &mut out,
        )
        .map_err(io)?;
        self.write_all(&out).await.map_err(io)?;
        let mut scram: Option<ScramClient> = None;
        loop {
            let frame = self.read_frame().await.map_err(io)?;
            let body = frame.body();
            match frame.tag() {
                b'R' => {
                    let (code, payload) = read_i32(body)
                        .ok_or_else(|| protocol("short authentication request".into()))?;
                    let mut out = BytesMut::new();
                    match code {
                        messages::AUTH_OK => continue,
                        messages::AUTH_CLEARTEXT => {
                            frontend::password_message(target.password()?.as_bytes(), &mut out)
                                .map_err(io)?
                        }
                        messages::AUTH_MD5 => {
                            let salt: [u8; 4] = payload
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| protocol("short md5 salt".into()))?;
                            let answer = target.md5_answer(salt)?;
                            frontend::password_message(answer.as_bytes(), &mut out).map_err(io)?
                        }
                        messages::AUTH_SASL => {
                            let offers_scram = payload
                                .split(|&b| b == 0)
                                .any(|m| m == MECHANISM.as_bytes());
                            if !offers_scram {
                                return Err(protocol(
                                    "server offers no SASL mechanism pgsplit supports".into(),
                                ));
                            }
                            let (client, client_first) = ScramClient::start(target.scram_secret()?);
                            frontend::sasl_initial_response(
                                MECHANISM,
                                client_first.as_bytes(),
                                &mut out,
                            )
                            .map_err(io)?;
                            scram = Some(client);
                        }
                        messages::AUTH_SASL_CONTINUE => {
                            let client = scram.as_mut().ok_or_else(|| {
                                protocol("SASL continue without SASL start".into())
                            })?;
                            let client_final = client
                                .respond(payload)
                                .map_err(|e| protocol(e.to_string()))?;
                            frontend::sasl_response(client_final.as_bytes(), &mut out)
                                .map_err(io)?;
                        }
                        messages::AUTH_SASL_FINAL => {
                            let client = scram
                                .take()
                                .ok_or_else(|| protocol("SASL final without SASL start".into()))?;
                            client
                                .verify(payload)
                                .map_err(|e| protocol(e.to_string()))?;
                            continue;
                        }
                        other => {
                            return Err(protocol(format!(
                                "unsupported authentication request {other}"
                            )))
                        }
                    }
                    self.write_all(&out).await.map_err(io)?;
                }
                b'E' => {
                    return Err(ConnectError::Refused {
                        node: target.node_name.clone(),
                        error: frame,
                    })
                }
                b'S' => self.note_parameter(body),
                b'K' => {
                    let (pid, rest) =
                        read_i32(body).ok_or_else(|| protocol("short BackendKeyData".into()))?;
                    let (secret, _) =
                        read_i32(rest).ok_or_else(|| protocol("short BackendKeyData".into()))?;
                    self.process_id = pid;
                    self.secret_key = secret;
                }
                b'Z' => return Ok(()),
                _ => {} // notices and NegotiateProtocolVersion need no answer
            }
        }
    }

    /// Records a `ParameterStatus` body.
    pub fn note_parameter(&mut self, body: &[u8]) {
        if let Some((name, rest)) = read_cstr(body) {
            if let Some((value, _)) = read_cstr(rest) {
                self.parameters.insert(
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
    }

    /// Takes the next buffered message, if a whole one has arrived.
    pub fn next_buffered(&mut self) -> io::Result<Option<Frame>> {
        frame::decode(&mut self.read_buf, self.max_message_size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Moves the whole messages at the front of the read buffer that
    /// `accept` takes (by tag and body) to `out` in one copy, stopping at
    /// the first one it refuses or that is incomplete or malformed (left
    /// for [`next_buffered`](Self::next_buffered)). Rows and most other
    /// replies need nothing but forwarding: this spares them a [`Frame`] each.
    pub fn forward_run(&mut self, out: &mut BytesMut, mut accept: impl FnMut(u8, &[u8]) -> bool) {
        let mut end = 0;
        while let Ok(Some(size)) =
            frame::whole_message_len(&self.read_buf[end..], self.max_message_size)
        {
            let message = &self.read_buf[end..end + size];
            if !accept(message[0], &message[5..]) {
                break;
            }
            end += size;
        }
        if end > 0 {
            out.extend_from_slice(&self.read_buf[..end]);
            self.read_buf.advance(end);
        }
    }

    /// Reads more bytes from the server. Cancel-safe, so it can sit in a
    /// `select!` beside the client socket. End of stream is an error.
    pub async fn fill(&mut self) -> io::Result<()> {
        match self
            .stream
            .read_available(&mut self.read_buf, SERVER_READ_CHUNK)
            .await?
        {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection unexpectedly",
            )),
            _ => Ok(()),
        }
    }

    /// Reads until a whole message is available and returns it.
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Sends bytes to the server.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.send_all(bytes).await
    }

    /// Runs a query whose results nobody wants (session replay, reset),
    /// reading up to `ReadyForQuery`. Returns the first error, if any.
    pub async fn run_silently(&mut self, sql: &str) -> io::Result<Option<Frame>> {
        Ok(self.run_query(sql).await?.error)
    }

    /// Runs a query of pgsplit's own, keeping the first column of its first
    /// row and its first error.
    pub async fn run_query(&mut self, sql: &str) -> io::Result<QueryOutcome> {
        self.write_all(&messages::query(sql)).await?;
        let mut outcome = QueryOutcome::default();
        loop {
            let frame = self.read_frame().await?;
            match frame.tag() {
                b'Z' => return Ok(outcome),
                b'S' => self.note_parameter(frame.body()),
                b'D' if outcome.first_value.is_none() => {
                    outcome.first_value = messages::first_column(frame.body()).map(<[u8]>::to_vec)
                }
                b'E' if outcome.error.is_none() => outcome.error = Some(frame),
                _ => {}
            }
        }
    }

    /// Checks, without blocking, that an idle connection is still usable.
    pub fn is_healthy_when_idle(&self) -> bool {
        self.read_buf.is_empty() && is_quiet(&self.stream)
    }

    /// Marks the connection as going back to its pool at `now`: it may be
    /// handed out again until `idle_timeout` from now or `max_lifetime`
    /// from its opening, whichever comes first. Worked out here, once, so
    /// that a checkout compares one instant instead of two durations.
    pub fn touch(&mut self, now: Instant, idle_timeout: Duration, max_lifetime: Duration) {
        self.returned_at = now;
        let idle_until = now.checked_add(idle_timeout);
        let lifetime_until = self.created.checked_add(max_lifetime);
        self.expires_at = match (idle_until, lifetime_until) {
            (Some(idle), Some(lifetime)) => Some(idle.min(lifetime)),
            (idle, lifetime) => idle.or(lifetime),
        };
    }

    /// Works out again, for an idle connection, when it stops being fit to
    /// hand out: a reload changed the pool's timeouts.
    pub fn judge_by(&mut self, idle_timeout: Duration, max_lifetime: Duration) {
        self.touch(self.returned_at, idle_timeout, max_lifetime);
    }

    /// Whether, idle, it is still within its idle timeout and lifetime at `now`.
    pub fn is_fresh_at(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|until| now < until)
    }

    /// Closes pooled prepared statements on an idle connection (one round
    /// trip for all of them), to keep it under its statement limit.
    pub async fn close_statements(&mut self, names: &[String]) -> io::Result<()> {
        let mut out = BytesMut::new();
        for name in names {
            out.extend_from_slice(&messages::describe_or_close(b'C', b'S', name));
        }
        out.extend_from_slice(&messages::sync());
        self.write_all(&out).await?;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag() {
                b'Z' => return Ok(()),
                b'S' => self.note_parameter(frame.body()),
                _ => {}
            }
        }
    }

    /// Says goodbye to the server; errors are irrelevant at that point.
    pub async fn terminate(mut self) {
        let _ = self.write_all(&messages::terminate()).await;
    }
}

/// Opens a TCP connection to a node, with TLS as `server_tls` says; shared
/// by pooled connections and the monitor's query clients.
pub async fn open_stream(
    host: &str,
    port: u16,
    node_name: &str,
    tls: Option<&ServerTls>,
    tcp_user_timeout: Duration,
) -> Result<ServerStream, ConnectError> {
    let io_error = |source| ConnectError::Io {
        node: node_name.to_owned(),
        address: node_address(host, port),
        source: std::sync::Arc::new(source),
    };
    // No TLS over a Unix socket: PostgreSQL does not offer it there, and
    // libpq ignores `sslmode` for such hosts too.
    #[cfg(unix)]
    if let Some(path) = socket_path(host, port) {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(io_error)?;
        return Ok(ServerStream::Plain(NodeSocket::Unix(stream)));
    }
    let stream = TcpStream::connect((host, port)).await.map_err(io_error)?;
    stream.set_nodelay(true).map_err(io_error)?;
    if !tcp_user_timeout.is_zero() {
        detect_dead_peer(&stream, tcp_user_timeout).map_err(io_error)?;
    }
    match tls {
        Some(tls) => negotiate_tls(stream, tls, host, node_name).await,
        None => Ok(ServerStream::Plain(NodeSocket::Tcp(stream))),
    }
}

/// Makes the kernel give up on a server that stopped answering (host
/// gone, network cut) after about `timeout`, even while pgsplit only waits
/// for a result: keepalive probes start after a third of it, and
/// `TCP_USER_TIMEOUT` ends the connection once data or probes have gone
/// unacknowledged that long. The client then gets an error, not a hang.
fn detect_dead_peer(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let probe_every = (timeout / 6).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time((timeout / 3).max(Duration::from_secs(1)))
        .with_interval(probe_every)
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(timeout))?;
    Ok(())
}

/// Asks the server for TLS (`SSLRequest`) and performs the handshake;
/// `prefer` falls back to plaintext when the server declines.
async fn negotiate_tls(
    mut stream: TcpStream,
    tls: &ServerTls,
    host: &str,
    node_name: &str,
) -> Result<ServerStream, ConnectError> {
    let failed = |detail: String| ConnectError::Protocol {
        node: node_name.to_owned(),
        detail,
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream
        .write_all(&request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let answer = stream.read_u8().await.map_err(|e| failed(e.to_string()))?;
    match answer {
        b'S' => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| failed(format!("invalid host name for TLS: {e}")))?;
            let tls_stream = tls
                .connector()
                .connect(name, stream)
                .await
                .map_err(|e| failed(format!("TLS handshake failed: {e}")))?;
            Ok(ServerStream::Tls(Box::new(tls_stream)))
        }
        b'N' if tls.mode == ServerTlsMode::Prefer => {
            Ok(ServerStream::Plain(NodeSocket::Tcp(stream)))
        }
        b'N' => Err(failed(format!(
            "server does not support TLS, but server_tls.mode is {:?}",
            tls.mode
        ))),
        other => Err(failed(format!("unexpected answer {other} to SSLRequest"))),
    }
}
