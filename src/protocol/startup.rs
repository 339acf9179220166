//! The first packet a client sends: SSL/GSS negotiation, cancel, or startup.

use bytes::{Buf, BytesMut};

use super::error::{PgError, SqlState};
use super::messages::read_cstr;

/// PostgreSQL refuses startup packets longer than this; so does pgsplit.
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;
/// The version field of an `SSLRequest`: the client asks for TLS.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The version field of a `GSSENCRequest`, which pgsplit always declines.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The version field of a `CancelRequest`.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0 as sent in the startup packet's version field.
pub const PROTOCOL_3_0: i32 = 196_608;

/// What a client asked for in its first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// `SSLRequest`: the client wants TLS before it logs in.
    SslRequest,
    /// `GSSENCRequest`: the client wants GSSAPI encryption (answered `N`).
    GssEncRequest,
    /// `CancelRequest`: cancel the query of the client with this key.
    Cancel {
        /// The process ID from the `BackendKeyData` pgsplit sent.
        process_id: i32,
        /// The secret key from that `BackendKeyData`.
        secret: i32,
    },
    /// A startup message: the client logs in.
    Startup(StartupRequest),
}

/// A protocol-3 startup message, already checked for required fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupRequest {
    /// The minor protocol version the client asked for (pgsplit speaks 0).
    pub minor_version: i32,
    /// The role to log in as; never empty.
    pub user: String,
    /// The database asked for; the user name when the client gave none.
    pub database: String,
    /// Every other parameter, `options` already expanded into `name=value`
    /// pairs; these become session settings on the server connections.
    pub parameters: Vec<(String, String)>,
    /// `_pq_.*` protocol options, which pgsplit reports as unrecognised.
    pub protocol_options: Vec<String>,
}

/// Takes one startup-phase packet off `buf`; `Ok(None)` means more bytes
/// are needed. Errors carry the SQLSTATE PostgreSQL would send.
pub fn decode(buf: &mut BytesMut) -> Result<Option<StartupPacket>, PgError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = (&buf[..4]).get_i32();
    if length < 8 || length as usize > MAX_STARTUP_PACKET_LENGTH {
        return Err(PgError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            "invalid length of startup packet",
        ));
    }
    let length = length as usize;
    if buf.len() < length {
        return Ok(None);
    }
    let packet = buf.split_to(length);
    let mut body = &packet[4..];
    let code = body.get_i32();
    let packet = match code {
        SSL_REQUEST_CODE => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            if body.len() != 8 {
                return Err(PgError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    "invalid length of cancel request packet",
                ));
            }
            StartupPacket::Cancel {
                process_id: body.get_i32(),
                secret: body.get_i32(),
            }
        }
        version if version >> 16 == 3 => {
            StartupPacket::Startup(parse_startup(version & 0xffff, body)?)
        }
        version => {
            return Err(PgError::fatal(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
                    version >> 16,
                    version & 0xffff
                ),
            ))
        }
    };
    Ok(Some(packet))
}

fn layout_error() -> PgError {
    PgError::fatal(
        SqlState::PROTOCOL_VIOLATION,
        "invalid startup packet layout: expected terminator as last byte",
    )
}

fn parse_startup(minor_version: i32, mut body: &[u8]) -> Result<StartupRequest, PgError> {
    let mut user = None;
    let mut database = None;
    let mut parameters = Vec::new();
    let mut protocol_options = Vec::new();
    loop {
        let (name, rest) = read_cstr(body).ok_or_else(layout_error)?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(layout_error());
            }
            break;
        }
        let (value, rest) = read_cstr(rest).ok_or_else(layout_error)?;
        body = rest;
        let name = utf8(name)?;
        let value = utf8(value)?;
        match name.as_str() {
            "user" => user = Some(value),
            "database" => database = Some(value),
            "options" => parameters.extend(parse_options(&value)?),
            "replication" => {
                return Err(PgError::fatal(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "pgsplit does not proxy replication connections",
                ))
            }
            _ if name.starts_with("_pq_.") => protocol_options.push(name),
            _ => parameters.push((name, value)),
        }
    }
    let user = user.filter(|u| !u.is_empty()).ok_or_else(|| {
        PgError::fatal(
            SqlState::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    Ok(StartupRequest {
        minor_version,
        user,
        database,
        parameters,
        protocol_options,
    })
}

fn utf8(bytes: &[u8]) -> Result<String, PgError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        PgError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            "invalid startup packet: parameters must be valid UTF-8",
        )
    })
}

/// Expands the `options` startup parameter (`-c name=value`, `--name=value`,
/// backslash escapes a space) into settings, the way PostgreSQL reads it.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, PgError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next()
        } else {
            word.strip_prefix("-c")
                .or_else(|| word.strip_prefix("--"))
                .map(str::to_owned)
        };
        let parsed = setting.as_deref().and_then(|s| s.split_once('='));
        let Some((name, value)) = parsed else {
            return Err(PgError::fatal(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!("unsupported startup option \"{word}\": only -c name=value is accepted"),
            ));
        };
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn packet(code: i32, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i32(8 + payload.len() as i32);
        buf.put_i32(code);
        buf.put_slice(payload);
        buf
    }

    #[test]
    fn parses_startup_with_options_and_default_database() {
        let mut buf = packet(
            PROTOCOL_3_0,
            b"user\0app\0application_name\0psql\0options\0-c search_path=a\\ b --work-mem=4MB\0_pq_.x\0y\0\0",
        );
        let Some(StartupPacket::Startup(req)) = decode(&mut buf).unwrap() else {
            panic!("not a startup packet");
        };
        assert_eq!(req.user, "app");
        assert_eq!(req.database, "app");
        assert_eq!(
            req.parameters,
            vec![
                ("application_name".into(), "psql".into()),
                ("search_path".into(), "a b".into()),
                ("work_mem".into(), "4MB".into()),
            ]
        );
        assert_eq!(req.protocol_options, vec!["_pq_.x".to_string()]);
        assert!(buf.is_empty());
    }

    #[test]
    fn recognises_negotiation_and_cancel_packets() {
        assert_eq!(
            decode(&mut packet(SSL_REQUEST_CODE, b"")).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            decode(&mut packet(GSSENC_REQUEST_CODE, b"")).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        assert_eq!(
            decode(&mut packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 0, 0, 0, 9])).unwrap(),
            Some(StartupPacket::Cancel {
                process_id: 7,
                secret: 9
            })
        );
    }

    #[test]
    fn rejects_bad_packets_with_postgres_sqlstates() {
        let mut short = BytesMut::from(&[0u8, 0, 0, 4, 1, 2, 3, 4][..]);
        assert_eq!(
            decode(&mut short).unwrap_err().code,
            SqlState::PROTOCOL_VIOLATION
        );
        let mut huge = BytesMut::from(&[0u8, 1, 0, 0][..]);
        assert_eq!(
            decode(&mut huge).unwrap_err().code,
            SqlState::PROTOCOL_VIOLATION
        );
        let err = decode(&mut packet(2 << 16, b"user\0a\0\0")).unwrap_err();
        assert_eq!(err.code, SqlState::FEATURE_NOT_SUPPORTED);
        assert!(err.message.contains("unsupported frontend protocol 2.0"));
        let err = decode(&mut packet(PROTOCOL_3_0, b"database\0x\0\0")).unwrap_err();
        assert_eq!(err.code, SqlState::INVALID_AUTHORIZATION);
        let err = decode(&mut packet(PROTOCOL_3_0, b"user\0x")).unwrap_err();
        assert_eq!(err.code, SqlState::PROTOCOL_VIOLATION);
        let err = decode(&mut packet(PROTOCOL_3_0, b"user\0x\0options\0-x\0\0")).unwrap_err();
        assert_eq!(err.code, SqlState::FEATURE_NOT_SUPPORTED);
    }

    #[test]
    fn waits_for_a_whole_packet() {
        let mut buf = packet(PROTOCOL_3_0, b"user\0app\0\0");
        let mut partial = buf.split_to(10);
        assert_eq!(decode(&mut partial).unwrap(), None);
    }
}
