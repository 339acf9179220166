//! The startup phase of a client connection: SSL/GSS negotiation, cancel
//! requests, protocol version checks and password authentication.

use std::io;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::ClientStream;
use crate::admin::console::ADMIN_DATABASE;
use crate::config::{AuthMethod, ClientTlsMode};
use crate::protocol::frame::{self, Frame};
use crate::protocol::messages::{self, read_cstr, read_i32};
use crate::protocol::scram::{ScramError, ScramServer, MECHANISM};
use crate::protocol::startup::{self, StartupPacket, StartupRequest};
use crate::protocol::{PgError, SqlState};
use crate::proxy::Shared;

/// Password messages are small; anything bigger is not a login attempt.
const MAX_AUTH_MESSAGE: usize = 8192;

/// A client that has authenticated and is ready for its session.
pub struct Authenticated {
    pub stream: ClientStream,
    pub request: StartupRequest,
    /// Bytes the client already sent after its last login message.
    pub buffered: BytesMut,
}

/// Where the startup phase ended.
pub enum LoginOutcome {
    Authenticated(Authenticated),
    /// The connection carried a cancel request, now handled.
    Cancelled,
    /// The client went away or was refused (the error was already sent).
    Closed,
}

/// Runs the startup phase on a fresh connection. Errors that the client
/// should see are sent as `ErrorResponse` before the connection closes.
pub async fn login(shared: &Shared, socket: TcpStream) -> LoginOutcome {
    let mut stream = ClientStream::Plain(socket);
    let mut buf = BytesMut::with_capacity(1024);
    match negotiate(shared, &mut stream, &mut buf).await {
        Ok(Some(request)) => LoginOutcome::Authenticated(Authenticated {
            stream,
            request,
            buffered: buf,
        }),
        Ok(None) => LoginOutcome::Cancelled,
        Err(LoginError::Client(error)) => {
            tracing::info!(%error, "client login refused");
            let _ = stream.write_all(&error.to_message()).await;
            let _ = stream.shutdown().await;
            LoginOutcome::Closed
        }
        Err(LoginError::Io(error)) => {
            tracing::debug!(%error, "client went away during login");
            LoginOutcome::Closed
        }
    }
}

enum LoginError {
    Client(PgError),
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
) -> Result<Option<StartupRequest>, LoginError> {
    let tls = &shared.config().tls;
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
                let acceptor = shared
                    .tls
                    .as_ref()
                    .filter(|_| tls.mode != ClientTlsMode::Disable);
                match (acceptor, &*stream) {
                    (Some(acceptor), ClientStream::Plain(_)) => {
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
                            *stream = ClientStream::Tls(Box::new(acceptor.accept(socket).await?));
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
                check_admission(shared, stream, &request)?;
                if request.minor_version > 0 || !request.protocol_options.is_empty() {
                    stream
                        .write_all(&messages::negotiate_protocol_version(
                            0,
                            &request.protocol_options,
                        ))
                        .await?;
                }
                authenticate(shared, stream, buf, &request).await?;
                return Ok(Some(request));
            }
        }
    }
}

fn check_admission(
    shared: &Shared,
    stream: &ClientStream,
    request: &StartupRequest,
) -> Result<(), PgError> {
    if shared.config().tls.mode == ClientTlsMode::Require && !stream.is_tls() {
        return Err(PgError::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!(
                "no pg_hba.conf entry for user \"{}\", database \"{}\", no encryption (pgsplit requires TLS)",
                request.user, request.database
            ),
        ));
    }
    if shared.client_count() > shared.config().max_client_connections {
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
) -> Result<(), LoginError> {
    let user = request.user.as_str();
    let credentials = if request.database == ADMIN_DATABASE {
        shared.admin_credentials(user).ok_or_else(|| {
            PgError::fatal(
                SqlState::INVALID_AUTHORIZATION,
                format!("user \"{user}\" may not use the pgsplit admin console"),
            )
        })?
    } else {
        shared.credentials(user).ok_or_else(|| {
            PgError::fatal(
                SqlState::INVALID_AUTHORIZATION,
                format!("role \"{user}\" does not exist"),
            )
        })?
    };
    let failed = || {
        LoginError::Client(PgError::fatal(
            SqlState::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        ))
    };
    match shared.config().auth_method {
        AuthMethod::Trust => {}
        AuthMethod::Md5 => {
            let salt: [u8; 4] = rand::random();
            stream
                .write_all(&messages::authentication(messages::AUTH_MD5, &salt))
                .await?;
            let response = read_password_message(stream, buf).await?;
            let (given, _) = read_cstr(response.body()).ok_or_else(malformed)?;
            let expected = md5_hash(user.as_bytes(), credentials.password.as_bytes(), salt);
            if given != expected.as_bytes() {
                return Err(failed());
            }
        }
        AuthMethod::ScramSha256 => {
            let mut mechanisms = MECHANISM.as_bytes().to_vec();
            mechanisms.extend_from_slice(b"\0\0");
            stream
                .write_all(&messages::authentication(messages::AUTH_SASL, &mechanisms))
                .await?;
            let initial = read_password_message(stream, buf).await?;
            let (mechanism, rest) = read_cstr(initial.body()).ok_or_else(malformed)?;
            if mechanism != MECHANISM.as_bytes() {
                return Err(PgError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    "client selected an invalid SASL authentication mechanism",
                )
                .into());
            }
            let (length, data) = read_i32(rest).ok_or_else(malformed)?;
            if usize::try_from(length).ok() != Some(data.len()) {
                return Err(malformed().into());
            }
            let scram_error = |e: ScramError| match e {
                ScramError::WrongPassword => failed(),
                other => LoginError::Client(PgError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    other.to_string(),
                )),
            };
            let (server, server_first) =
                ScramServer::start(&credentials.scram, data).map_err(scram_error)?;
            stream
                .write_all(&messages::authentication(
                    messages::AUTH_SASL_CONTINUE,
                    server_first.as_bytes(),
                ))
                .await?;
            let response = read_password_message(stream, buf).await?;
            let server_final = server.finish(response.body()).map_err(scram_error)?;
            stream
                .write_all(&messages::authentication(
                    messages::AUTH_SASL_FINAL,
                    server_final.as_bytes(),
                ))
                .await?;
        }
    }
    stream
        .write_all(&messages::authentication(messages::AUTH_OK, &[]))
        .await?;
    Ok(())
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
