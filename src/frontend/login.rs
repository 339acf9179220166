//! The startup phase of a client connection: SSL/GSS negotiation, cancel
//! requests, protocol version checks and password authentication.

use std::io;
use std::net::IpAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::ClientStream;
use crate::admin::console::ADMIN_DATABASE;
use crate::auth::LookedUp;
use crate::config::{AuthMethod, ClientTlsMode};
use crate::protocol::frame::{self, Frame};
use crate::protocol::messages::{self, read_cstr, read_i32};
use crate::protocol::scram::{
    Binding, ScramError, ScramServer, ScramVerifier, MECHANISM, MECHANISM_PLUS,
};
use crate::protocol::startup::{self, StartupPacket, StartupRequest};
use crate::protocol::{PgError, SqlState};
use crate::proxy::Shared;

/// Password messages are small; anything bigger is not a login attempt.
const MAX_AUTH_MESSAGE: usize = 8192;

/// What an address that used up `auth_failure_limit` is told.
const BLOCKED: &str = "too many failed login attempts from this address; try again later";

/// A client that has authenticated and is ready for its session.
pub struct Authenticated {
    /// The client's connection, TLS already negotiated if asked for.
    pub stream: ClientStream,
    /// Who the client is and the parameters it sent at startup.
    pub request: StartupRequest,
    /// Bytes the client already sent after its last login message.
    pub buffered: BytesMut,
}

/// Where the startup phase ended.
pub enum LoginOutcome {
    /// The client logged in: its session can start.
    Authenticated(Authenticated),
    /// The connection carried a cancel request, now handled.
    Cancelled,
    /// The client went away or was refused (the error was already sent).
    Closed,
}

/// Runs the startup phase on a fresh connection. Errors that the client
/// should see are sent as `ErrorResponse` before the connection closes.
pub async fn login(shared: &Shared, socket: TcpStream) -> LoginOutcome {
    let peer = socket.peer_addr().ok().map(|a| a.ip());
    let mut stream = ClientStream::Plain(socket);
    let mut buf = BytesMut::with_capacity(1024);
    match negotiate(shared, &mut stream, &mut buf, peer).await {
        Ok(Some(request)) => LoginOutcome::Authenticated(Authenticated {
            stream,
            request,
            buffered: buf,
        }),
        Ok(None) => LoginOutcome::Cancelled,
        Err(LoginError::Credentials(error)) => {
            if let Some(peer) = peer {
                let window = shared.config().auth_failure_window;
                shared.login_failures.record(peer, window);
            }
            // The message names the user and the reason, never a secret.
            tracing::warn!(peer = ?peer, %error, "client login failed");
            refuse(stream, error).await
        }
        Err(LoginError::Client(error)) => {
            tracing::info!(peer = ?peer, %error, "client login refused");
            refuse(stream, error).await
        }
        Err(LoginError::Io(error)) => {
            tracing::debug!(%error, "client went away during login");
            LoginOutcome::Closed
        }
    }
}

/// Sends the client its error and closes the connection.
async fn refuse(mut stream: ClientStream, error: PgError) -> LoginOutcome {
    let _ = stream.write_all(&error.to_message()).await;
    let _ = stream.shutdown().await;
    LoginOutcome::Closed
}

enum LoginError {
    Client(PgError),
    /// A wrong password or unknown user: counted against the address.
    Credentials(PgError),
    Io(io::Error),
}

impl From<PgError> for LoginError {
    fn from(e: PgError) -> Self {
        LoginError::Client(e)
    }
}

impl From<io::Error> for LoginError {
    fn from(e: io::Error) -> Self {
        LoginError::Io(e)
    }
}

/// Reads packets until a startup message arrives (upgrading to TLS on the
/// way if asked), then authenticates. `None` means a cancel request.
async fn negotiate(
    shared: &Shared,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    peer: Option<IpAddr>,
) -> Result<Option<StartupRequest>, LoginError> {
    let tls_mode = shared.config().tls.mode;
    // The certificate's hash, once TLS is up, for SCRAM-SHA-256-PLUS.
    let mut endpoint_hash = None;
    loop {
        let packet = loop {
            if let Some(packet) = startup::decode(buf)? {
                break packet;
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                let tls = shared
                    .tls
                    .load_full()
                    .filter(|_| tls_mode != ClientTlsMode::Disable);
                match (tls, &*stream) {
                    (Some(tls), ClientStream::Plain(_)) => {
                        if !buf.is_empty() {
                            return Err(PgError::fatal(
                                SqlState::PROTOCOL_VIOLATION,
                                "received unencrypted data after SSL request",
                            )
                            .into());
                        }
                        stream.write_all(b"S").await?;
                        if let ClientStream::Plain(socket) =
                            std::mem::replace(stream, ClientStream::Detached)
                        {
                            *stream =
                                ClientStream::Tls(Box::new(tls.acceptor.accept(socket).await?));
                            endpoint_hash = tls.endpoint_hash.clone();
                        }
                    }
                    (_, ClientStream::Tls(_) | ClientStream::Detached) => {
                        return Err(PgError::fatal(
                            SqlState::PROTOCOL_VIOLATION,
                            "SSL request received on an encrypted connection",
                        )
                        .into())
                    }
                    (None, _) => stream.write_all(b"N").await?,
                }
            }
            StartupPacket::GssEncRequest => stream.write_all(b"N").await?,
            StartupPacket::Cancel { process_id, secret } => {
                shared.cancels.cancel(process_id, secret).await;
                return Ok(None);
            }
            StartupPacket::Startup(request) => {
                check_admission(shared, stream, &request, peer)?;
                if request.minor_version > 0 || !request.protocol_options.is_empty() {
                    stream
                        .write_all(&messages::negotiate_protocol_version(
                            0,
                            &request.protocol_options,
                        ))
                        .await?;
                }
                authenticate(shared, stream, buf, &request, endpoint_hash.as_deref()).await?;
                return Ok(Some(request));
            }
        }
    }
}

fn check_admission(
    shared: &Shared,
    stream: &ClientStream,
    request: &StartupRequest,
    peer: Option<IpAddr>,
) -> Result<(), PgError> {
    let config = shared.config();
    if let Some(peer) = peer {
        if shared.login_failures.is_blocked(
            peer,
            config.auth_failure_limit,
            config.auth_failure_window,
        ) {
            return Err(PgError::fatal(SqlState::INVALID_AUTHORIZATION, BLOCKED));
        }
    }
    if config.tls.mode == ClientTlsMode::Require && !stream.is_tls() {
        return Err(PgError::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!(
                "no pg_hba.conf entry for user \"{}\", database \"{}\", no encryption (pgsplit requires TLS)",
                request.user, request.database
            ),
        ));
    }
    if shared.client_count() > config.max_client_connections {
        return Err(PgError::fatal(
            SqlState::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        ));
    }
    Ok(())
}

async fn authenticate(
    shared: &Shared,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    request: &StartupRequest,
    endpoint_hash: Option<&[u8]>,
) -> Result<(), LoginError> {
    let user = request.user.as_str();
    let no_role = || {
        LoginError::Credentials(PgError::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!("role \"{user}\" does not exist"),
        ))
    };
    let found = if request.database == ADMIN_DATABASE {
        let credentials = shared.admin_credentials(user).ok_or_else(|| {
            PgError::fatal(
                SqlState::INVALID_AUTHORIZATION,
                format!("user \"{user}\" may not use the pgsplit admin console"),
            )
        })?;
        LookedUp {
            credentials,
            expired: false,
        }
    } else {
        shared.login_credentials(user).await?.ok_or_else(no_role)?
    };
    let credentials = &found.credentials;
    let failed = || {
        LoginError::Credentials(PgError::fatal(
            SqlState::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        ))
    };
    match (shared.config().auth_method, credentials.md5()) {
        (AuthMethod::Trust, _) => {}
        (AuthMethod::Md5, Some(hash)) => {
            let salt: [u8; 4] = rand::random();
            stream
                .write_all(&messages::authentication(messages::AUTH_MD5, &salt))
                .await?;
            let response = read_password_message(stream, buf).await?;
            let (given, _) = read_cstr(response.body()).ok_or_else(malformed)?;
            if given != hash.salted(salt).as_bytes() {
                return Err(failed());
            }
        }
        // SCRAM; also md5 when only a verifier is stored, as PostgreSQL does.
        _ => {
            let Some(verifier) = credentials.scram() else {
                // PostgreSQL refuses such a login the same way.
                tracing::info!(
                    user,
                    "the user has only an md5 hash, which cannot check a SCRAM-SHA-256 login"
                );
                return Err(failed());
            };
            let client_key = scram_exchange(stream, buf, verifier, endpoint_hash)
                .await
                .map_err(|error| match error {
                    ScramLoginError::Scram(ScramError::WrongPassword) => failed(),
                    ScramLoginError::Scram(other) => LoginError::Client(PgError::fatal(
                        SqlState::PROTOCOL_VIOLATION,
                        other.to_string(),
                    )),
                    ScramLoginError::Login(error) => error,
                })?;
            shared.learn_client_key(user, credentials, client_key);
        }
    }
    if found.expired {
        tracing::info!(user, "the user's password has expired (rolvaliduntil)");
        return Err(failed());
    }
    stream
        .write_all(&messages::authentication(messages::AUTH_OK, &[]))
        .await?;
    Ok(())
}

/// A SCRAM login that did not succeed.
enum ScramLoginError {
    Scram(ScramError),
    Login(LoginError),
}

impl<E: Into<LoginError>> From<E> for ScramLoginError {
    fn from(error: E) -> Self {
        ScramLoginError::Login(error.into())
    }
}

/// Runs SCRAM-SHA-256 (or -PLUS over TLS, when the certificate allows)
/// against `verifier`; returns the `ClientKey` the proof revealed.
async fn scram_exchange(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    verifier: &ScramVerifier,
    endpoint_hash: Option<&[u8]>,
) -> Result<[u8; 32], ScramLoginError> {
    let mut mechanisms = Vec::new();
    if endpoint_hash.is_some() {
        mechanisms.extend_from_slice(MECHANISM_PLUS.as_bytes());
        mechanisms.push(0);
    }
    mechanisms.extend_from_slice(MECHANISM.as_bytes());
    mechanisms.extend_from_slice(b"\0\0");
    stream
        .write_all(&messages::authentication(messages::AUTH_SASL, &mechanisms))
        .await?;
    let initial = read_password_message(stream, buf).await?;
    let (mechanism, rest) = read_cstr(initial.body()).ok_or_else(malformed)?;
    let binding = match (mechanism, endpoint_hash) {
        (m, Some(hash)) if m == MECHANISM_PLUS.as_bytes() => Binding::Bound(hash),
        (m, Some(_)) if m == MECHANISM.as_bytes() => Binding::Declined,
        (m, None) if m == MECHANISM.as_bytes() => Binding::Unavailable,
        _ => {
            return Err(PgError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
            )
            .into())
        }
    };
    let (length, data) = read_i32(rest).ok_or_else(malformed)?;
    if usize::try_from(length).ok() != Some(data.len()) {
        return Err(malformed().into());
    }
    let (server, server_first) =
        ScramServer::start(verifier, data, binding).map_err(ScramLoginError::Scram)?;
    stream
        .write_all(&messages::authentication(
            messages::AUTH_SASL_CONTINUE,
            server_first.as_bytes(),
        ))
        .await?;
    let response = read_password_message(stream, buf).await?;
    let success = server
        .finish(response.body())
        .map_err(ScramLoginError::Scram)?;
    stream
        .write_all(&messages::authentication(
            messages::AUTH_SASL_FINAL,
            success.server_final.as_bytes(),
        ))
        .await?;
    Ok(success.client_key)
}

fn malformed() -> PgError {
    PgError::fatal(
        SqlState::PROTOCOL_VIOLATION,
        "malformed authentication message",
    )
}

/// Reads the client's next message, which must be a password/SASL message.
async fn read_password_message(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Frame, LoginError> {
    loop {
        let decoded = frame::decode(buf, MAX_AUTH_MESSAGE)
            .map_err(|e| PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))?;
        if let Some(frame) = decoded {
            if frame.tag() != b'p' {
                return Err(PgError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!(
                        "expected password response, got message type {}",
                        frame.tag()
                    ),
                )
                .into());
            }
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
}
