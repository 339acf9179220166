//! Encoding of the messages pgsplit writes itself, and field access for the
//! few it must look inside. Everything else is forwarded as framed bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// Builds one message: tag, length (patched in afterwards) and body.
fn build(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    put_message(&mut buf, tag, body);
    buf.freeze()
}

/// Appends a message to `out`, its length filled in after the body.
fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u8(tag);
    out.put_i32(0);
    body(out);
    let length = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&length.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

// ---- server -> client ----

/// `AuthenticationOk` and the other `R` messages, by their code.
pub fn authentication(code: i32, payload: &[u8]) -> Bytes {
    build(b'R', |b| {
        b.put_i32(code);
        b.put_slice(payload);
    })
}

/// `AuthenticationOk`: the login succeeded.
pub const AUTH_OK: i32 = 0;
/// `AuthenticationCleartextPassword`: send the password as it is.
pub const AUTH_CLEARTEXT: i32 = 3;
/// `AuthenticationMD5Password`: send an md5 hash salted with the 4 bytes after it.
pub const AUTH_MD5: i32 = 5;
/// `AuthenticationSASL`: the SASL mechanisms offered follow.
pub const AUTH_SASL: i32 = 10;
/// `AuthenticationSASLContinue`: a SCRAM server-first message follows.
pub const AUTH_SASL_CONTINUE: i32 = 11;
/// `AuthenticationSASLFinal`: the SCRAM server-final message follows.
pub const AUTH_SASL_FINAL: i32 = 12;

/// `ParameterStatus`: a run-time parameter the client should know about.
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    build(b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    })
}

/// `BackendKeyData`: the key a client quotes in a later `CancelRequest`.
pub fn backend_key_data(process_id: i32, secret: i32) -> Bytes {
    build(b'K', |b| {
        b.put_i32(process_id);
        b.put_i32(secret);
    })
}

/// `ReadyForQuery` with a transaction status of `I`, `T` or `E`.
pub fn ready_for_query(status: u8) -> Bytes {
    build(b'Z', |b| b.put_u8(status))
}

/// `ErrorResponse` with the fields psql shows: severity, SQLSTATE, message.
pub fn error_response(severity: &str, code: &str, message: &str) -> Bytes {
    build(b'E', |b| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            b.put_u8(field);
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    })
}

/// `ParseComplete`, synthesised when a statement is already prepared.
pub fn parse_complete() -> Bytes {
    build(b'1', |_| {})
}

/// `CloseComplete`, synthesised when a pooled statement is closed.
pub fn close_complete() -> Bytes {
    build(b'3', |_| {})
}

/// `CommandComplete` with a command tag such as `DEALLOCATE`.
pub fn command_complete(tag: &str) -> Bytes {
    build(b'C', |b| put_cstr(b, tag.as_bytes()))
}

/// `RowDescription` of `text` columns, as `SHOW` and the admin console
/// describe their results.
pub fn text_row_description(columns: &[&str]) -> Bytes {
    /// The `text` type's OID.
    const TEXT_OID: i32 = 25;
    build(b'T', |b| {
        b.put_i16(columns.len() as i16);
        for column in columns {
            put_cstr(b, column.as_bytes());
            b.put_i32(0); // no table
            b.put_i16(0); // no column number
            b.put_i32(TEXT_OID);
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no type modifier
            b.put_i16(0); // text format
        }
    })
}

/// `DataRow` of text values (`None` is NULL).
pub fn text_data_row(values: &[Option<&str>]) -> Bytes {
    build(b'D', |b| {
        b.put_i16(values.len() as i16);
        for value in values {
            match value {
                Some(value) => {
                    b.put_i32(value.len() as i32);
                    b.put_slice(value.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    })
}

/// `NegotiateProtocolVersion`: the newest minor version pgsplit speaks and
/// the `_pq_.` options it did not recognise.
pub fn negotiate_protocol_version(minor: i32, unrecognized: &[String]) -> Bytes {
    build(b'v', |b| {
        b.put_i32(minor);
        b.put_i32(unrecognized.len() as i32);
        for option in unrecognized {
            put_cstr(b, option.as_bytes());
        }
    })
}

// ---- client -> server ----

/// `Query` (simple protocol).
pub fn query(sql: &str) -> Bytes {
    build(b'Q', |b| put_cstr(b, sql.as_bytes()))
}

/// `Parse` naming the statement `name`; `rest` is the original body after
/// the statement name (query text and parameter types), reused untouched.
pub fn parse_renamed(name: &str, rest: &[u8]) -> Bytes {
    build(b'P', |b| {
        put_cstr(b, name.as_bytes());
        b.put_slice(rest);
    })
}

/// The rest of a `Parse` body after the name: query text, no parameter types.
pub fn parse_rest(sql: &str) -> Vec<u8> {
    let mut rest = Vec::with_capacity(sql.len() + 3);
    rest.extend_from_slice(sql.as_bytes());
    rest.extend_from_slice(&[0, 0, 0]);
    rest
}

/// `Execute` of the unnamed portal, all rows.
pub fn execute_unnamed() -> Bytes {
    build(b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    })
}

/// `Bind` with the statement name replaced; `rest` is everything after it.
pub fn bind_renamed(portal: &[u8], statement: &str, rest: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    put_bind_renamed(&mut buf, portal, statement, rest);
    buf.freeze()
}

/// [`bind_renamed`] appended to `out`: sent on every execution of a
/// pooled prepared statement, so it is written in place.
pub fn put_bind_renamed(out: &mut BytesMut, portal: &[u8], statement: &str, rest: &[u8]) {
    // Its size is known up front: one reservation, then plain copies.
    let length = 4 + portal.len() + 1 + statement.len() + 1 + rest.len();
    out.reserve(1 + length);
    put_message(out, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement.as_bytes());
        b.put_slice(rest);
    })
}

/// `Describe` or `Close` (same layout) of a statement or portal.
pub fn describe_or_close(tag: u8, kind: u8, name: &str) -> Bytes {
    build(tag, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    })
}

/// `Sync`, which ends an extended-protocol batch.
pub fn sync() -> Bytes {
    build(b'S', |_| {})
}

/// `Terminate`, sent before closing a server connection politely.
pub fn terminate() -> Bytes {
    build(b'X', |_| {})
}

/// The 16-byte `CancelRequest` packet sent on a fresh connection.
pub fn cancel_request(process_id: i32, secret: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_i32(16);
    b.put_i32(super::startup::CANCEL_REQUEST_CODE);
    b.put_i32(process_id);
    b.put_i32(secret);
    b.freeze()
}

// ---- field access ----

/// The first column of a `DataRow` body; `None` when it is NULL or the row is malformed.
pub fn first_column(body: &[u8]) -> Option<&[u8]> {
    let count = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if count < 1 {
        return None;
    }
    let (length, rest) = read_i32(&body[2..])?;
    let length = usize::try_from(length).ok()?;
    rest.get(..length)
}

/// Splits a NUL-terminated string off the front of `buf`.
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    // Names are mostly empty, which needs no search; `memchr` is quick on
    // the rest (query texts, short names alike).
    let end = match buf.first() {
        Some(0) => 0,
        _ => memchr::memchr(0, buf)?,
    };
    Some((&buf[..end], &buf[end + 1..]))
}

/// Reads a big-endian i32 at the front of `buf`.
pub fn read_i32(buf: &[u8]) -> Option<(i32, &[u8])> {
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some((i32::from_be_bytes(bytes), &buf[4..]))
}

/// `Parse` body: statement name, then the rest (query text, parameter types).
pub struct ParseBody<'a> {
    /// The client's statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// The query text, without its terminating zero byte.
    pub query: &'a [u8],
    /// Everything after the name: query text and parameter types.
    pub rest_after_name: &'a [u8],
}

/// Reads a `Parse` body; `None` if it is malformed.
pub fn parse_body(body: &[u8]) -> Option<ParseBody<'_>> {
    let (name, rest_after_name) = read_cstr(body)?;
    let (query, _) = read_cstr(rest_after_name)?;
    Some(ParseBody {
        name,
        query,
        rest_after_name,
    })
}

/// `Bind` body: portal, statement name, then the rest (formats, values).
pub fn bind_body(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (portal, rest) = read_cstr(body)?;
    let (statement, rest) = read_cstr(rest)?;
    Some((portal, statement, rest))
}

/// `Describe`/`Close` body: `S` or `P`, then the name.
pub fn describe_or_close_body(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = read_cstr(rest)?;
    matches!(kind, b'S' | b'P').then_some((kind, name))
}

/// The fields of an `ErrorResponse` that pgsplit acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// The SQLSTATE (`C`).
    pub code: Option<&'a [u8]>,
    /// The non-localised severity (`V`), else the localised one (`S`).
    pub severity: Option<&'a [u8]>,
    /// The primary message text (`M`).
    pub message: Option<&'a [u8]>,
}

/// Reads the code, severity and message of an `ErrorResponse` body.
pub fn error_fields(body: &[u8]) -> ErrorFields<'_> {
    let mut fields = ErrorFields::default();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, tail)) = read_cstr(tail) else {
            break;
        };
        match field {
            b'C' => fields.code = Some(value),
            b'V' => fields.severity = Some(value),
            b'S' if fields.severity.is_none() => fields.severity = Some(value),
            b'M' => fields.message = Some(value),
            _ => {}
        }
        rest = tail;
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_messages_have_correct_lengths() {
        let msg = error_response("FATAL", "28P01", "nope");
        let length = i32::from_be_bytes(msg[1..5].try_into().unwrap()) as usize;
        assert_eq!(length + 1, msg.len());
        let fields = error_fields(&msg[5..]);
        assert_eq!(fields.code, Some(&b"28P01"[..]));
        assert_eq!(fields.severity, Some(&b"FATAL"[..]));
        assert_eq!(fields.message, Some(&b"nope"[..]));
    }

    #[test]
    fn renaming_keeps_the_rest_of_parse_and_bind() {
        let parse = parse_renamed("S_1", b"SELECT $1\0\0\x01\0\0\0\x17");
        let body = parse_body(&parse[5..]).unwrap();
        assert_eq!(body.name, b"S_1");
        assert_eq!(body.query, b"SELECT $1");
        let renamed = parse_renamed("pgsplit_1", body.rest_after_name);
        let again = parse_body(&renamed[5..]).unwrap();
        assert_eq!(again.query, b"SELECT $1");
        assert_eq!(again.rest_after_name, body.rest_after_name);

        let bind = bind_renamed(b"", "pgsplit_1", b"\0\0\0\0\0\0");
        let (portal, statement, rest) = bind_body(&bind[5..]).unwrap();
        assert_eq!(
            (portal, statement, rest),
            (&b""[..], &b"pgsplit_1"[..], &b"\0\0\0\0\0\0"[..])
        );
    }

    #[test]
    fn messages_appended_to_a_buffer_carry_their_own_length() {
        let mut out = BytesMut::from(&sync()[..]);
        put_bind_renamed(&mut out, b"p", "pgsplit_2", b"\0\0\0\0\0\0");
        assert_eq!(&out[..5], &sync()[..]);
        assert_eq!(
            out[5..],
            bind_renamed(b"p", "pgsplit_2", b"\0\0\0\0\0\0")[..]
        );
        assert_eq!(
            i32::from_be_bytes([out[6], out[7], out[8], out[9]]) as usize,
            out.len() - 6
        );
    }

    #[test]
    fn malformed_bodies_are_rejected_not_panicking() {
        assert!(parse_body(b"no-terminator").is_none());
        assert!(bind_body(b"portal\0stmt").is_none());
        assert!(describe_or_close_body(b"X\0").is_none());
        assert!(describe_or_close_body(b"").is_none());
        assert_eq!(error_fields(b"C"), ErrorFields::default());
    }
}
