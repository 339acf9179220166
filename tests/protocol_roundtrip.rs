//! Property tests: every message pgsplit encodes decodes back to what it was
//! built from, through the same framing and field parsers the proxy uses on
//! live traffic; streams of messages split back into the same messages
//! however the bytes are chunked; and startup packets decode to the user,
//! database and parameters they carry.

use bytes::{Bytes, BytesMut};
use pgsplit::protocol::frame::{self, Frame};
use pgsplit::protocol::messages::{self, read_cstr, read_i32};
use pgsplit::protocol::startup::{self, StartupPacket, PROTOCOL_3_0};
use pgsplit::protocol::{PgError, SqlState};
use proptest::prelude::*;

const MAX: usize = 1 << 20;

/// Decodes `bytes` as exactly one frame with nothing left over, checking the
/// length field, and that no strict prefix already makes a frame.
fn one_frame(bytes: &[u8]) -> Frame {
    for cut in [0, 1, 4, 5, bytes.len().saturating_sub(1)] {
        if cut < bytes.len() {
            let mut partial = BytesMut::from(&bytes[..cut]);
            assert_eq!(
                frame::decode(&mut partial, MAX),
                Ok(None),
                "prefix of {cut} bytes"
            );
            assert_eq!(partial.len(), cut);
        }
    }
    let mut buf = BytesMut::from(bytes);
    let frame = frame::decode(&mut buf, MAX)
        .expect("framing error")
        .expect("incomplete frame");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    let length = i32::from_be_bytes(bytes[1..5].try_into().unwrap());
    assert_eq!(length as usize + 1, bytes.len());
    assert_eq!(frame.bytes(), bytes);
    assert_eq!(frame.body(), &bytes[5..]);
    frame
}

/// Field readers the proxy does not need itself.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn cstr(&mut self) -> &'a str {
        let (s, rest) = read_cstr(self.0).expect("missing NUL");
        self.0 = rest;
        std::str::from_utf8(s).expect("not UTF-8")
    }
    fn i32(&mut self) -> i32 {
        let (v, rest) = read_i32(self.0).expect("short i32");
        self.0 = rest;
        v
    }
    fn i16(&mut self) -> i16 {
        let (v, rest) = self.0.split_at(2);
        self.0 = rest;
        i16::from_be_bytes(v.try_into().unwrap())
    }
    fn u8(&mut self) -> u8 {
        let (&v, rest) = self.0.split_first().expect("short u8");
        self.0 = rest;
        v
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (v, rest) = self.0.split_at(n);
        self.0 = rest;
        v
    }
    fn done(&self) {
        assert!(self.0.is_empty(), "{} trailing bytes", self.0.len());
    }
}

/// Text without NUL, where the wire format NUL-terminates it.
fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,15}"
}

/// Any message pgsplit builds, for the stream properties.
fn message() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        (any::<i32>(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(c, p)| messages::authentication(c, &p)),
        (text(), text()).prop_map(|(n, v)| messages::parameter_status(&n, &v)),
        (any::<i32>(), any::<i32>()).prop_map(|(p, s)| messages::backend_key_data(p, s)),
        any::<u8>().prop_map(messages::ready_for_query),
        (text(), text(), text()).prop_map(|(s, c, m)| messages::error_response(&s, &c, &m)),
        Just(messages::parse_complete()),
        Just(messages::close_complete()),
        text().prop_map(|t| messages::command_complete(&t)),
        prop::collection::vec(text(), 0..5).prop_map(|c| {
            messages::text_row_description(&c.iter().map(String::as_str).collect::<Vec<_>>())
        }),
        prop::collection::vec(prop::option::of(".{0,20}"), 0..5).prop_map(|v| {
            messages::text_data_row(&v.iter().map(Option::as_deref).collect::<Vec<_>>())
        }),
        (any::<i32>(), prop::collection::vec(text(), 0..4))
            .prop_map(|(m, o)| messages::negotiate_protocol_version(m, &o)),
        text().prop_map(|q| messages::query(&q)),
        (text(), text()).prop_map(|(n, q)| messages::parse_renamed(&n, &messages::parse_rest(&q))),
        Just(messages::execute_unnamed()),
        (text(), text(), prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(p, s, r)| messages::bind_renamed(p.as_bytes(), &s, &r)),
        (
            prop::sample::select(vec![b'D', b'C']),
            prop::sample::select(vec![b'S', b'P']),
            text()
        )
            .prop_map(|(t, k, n)| messages::describe_or_close(t, k, &n)),
        Just(messages::sync()),
        Just(messages::terminate()),
    ]
}

proptest! {
    #[test]
    fn authentication(code in any::<i32>(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
        let frame = one_frame(&messages::authentication(code, &payload));
        prop_assert_eq!(frame.tag(), b'R');
        let mut r = Reader(frame.body());
        prop_assert_eq!(r.i32(), code);
        prop_assert_eq!(r.bytes(payload.len()), &payload[..]);
        r.done();
    }

    #[test]
    fn parameter_status(name in text(), value in text()) {
        let frame = one_frame(&messages::parameter_status(&name, &value));
        prop_assert_eq!(frame.tag(), b'S');
        let mut r = Reader(frame.body());
        prop_assert_eq!(r.cstr(), name);
        prop_assert_eq!(r.cstr(), value);
        r.done();
    }

    #[test]
    fn backend_key_data(process_id in any::<i32>(), secret in any::<i32>()) {
        let frame = one_frame(&messages::backend_key_data(process_id, secret));
        prop_assert_eq!(frame.tag(), b'K');
        let mut r = Reader(frame.body());
        prop_assert_eq!((r.i32(), r.i32()), (process_id, secret));
        r.done();
    }

    #[test]
    fn ready_for_query(status in any::<u8>()) {
        let frame = one_frame(&messages::ready_for_query(status));
        prop_assert_eq!(frame.tag(), b'Z');
        prop_assert_eq!(frame.body(), &[status][..]);
    }

    #[test]
    fn error_response(severity in text(), code in text(), message in text()) {
        let frame = one_frame(&messages::error_response(&severity, &code, &message));
        prop_assert_eq!(frame.tag(), b'E');
        let fields = messages::error_fields(frame.body());
        prop_assert_eq!(fields.severity, Some(severity.as_bytes()));
        prop_assert_eq!(fields.code, Some(code.as_bytes()));
        prop_assert_eq!(fields.message, Some(message.as_bytes()));
        let mut r = Reader(frame.body());
        for (field, value) in [(b'S', &severity), (b'V', &severity), (b'C', &code), (b'M', &message)] {
            prop_assert_eq!(r.u8(), field);
            prop_assert_eq!(r.cstr(), value.as_str());
        }
        prop_assert_eq!(r.u8(), 0);
        r.done();
    }

    #[test]
    fn pg_error_to_message(message in text(), fatal in any::<bool>()) {
        let error = if fatal {
            PgError::fatal(SqlState::PROTOCOL_VIOLATION, message.clone())
        } else {
            PgError::error(SqlState::SYNTAX_ERROR, message.clone())
        };
        let frame = one_frame(&error.to_message());
        let fields = messages::error_fields(frame.body());
        prop_assert_eq!(fields.code, Some(error.code.as_bytes()));
        let severity: &[u8] = if fatal { b"FATAL" } else { b"ERROR" };
        prop_assert_eq!(fields.severity, Some(severity));
        prop_assert_eq!(fields.message, Some(message.as_bytes()));
    }

    #[test]
    fn command_complete(tag in text()) {
        let frame = one_frame(&messages::command_complete(&tag));
        prop_assert_eq!(frame.tag(), b'C');
        let mut r = Reader(frame.body());
        prop_assert_eq!(r.cstr(), tag);
        r.done();
    }

    #[test]
    fn text_row_description(columns in prop::collection::vec(text(), 0..12)) {
        let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
        let frame = one_frame(&messages::text_row_description(&refs));
        prop_assert_eq!(frame.tag(), b'T');
        let mut r = Reader(frame.body());
        prop_assert_eq!(r.i16() as usize, columns.len());
        for column in &columns {
            prop_assert_eq!(r.cstr(), column.as_str());
            prop_assert_eq!((r.i32(), r.i16()), (0, 0)); // table, column number
            prop_assert_eq!((r.i32(), r.i16(), r.i32(), r.i16()), (25, -1, -1, 0)); // text, varlena, no typmod, text format
        }
        r.done();
    }

    #[test]
    fn text_data_row(values in prop::collection::vec(prop::option::of(".{0,30}"), 0..12)) {
        let refs: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
        let frame = one_frame(&messages::text_data_row(&refs));
        prop_assert_eq!(frame.tag(), b'D');
        let expected_first = values.first().cloned().flatten();
        prop_assert_eq!(
            messages::first_column(frame.body()),
            expected_first.as_ref().map(String::as_bytes)
        );
        let mut r = Reader(frame.body());
        prop_assert_eq!(r.i16() as usize, values.len());
        for value in &values {
            let length = r.i32();
            match value {
                None => prop_assert_eq!(length, -1),
                Some(value) => {
                    prop_assert_eq!(length as usize, value.len());
                    prop_assert_eq!(r.bytes(value.len()), value.as_bytes());
                }
            }
        }
        r.done();
    }

    #[test]
    fn negotiate_protocol_version(minor in any::<i32>(), options in prop::collection::vec(text(), 0..6)) {
        let frame = one_frame(&messages::negotiate_protocol_version(minor, &options));
        prop_assert_eq!(frame.tag(), b'v');
        let mut r = Reader(frame.body());
        prop_assert_eq!(r.i32(), minor);
        prop_assert_eq!(r.i32() as usize, options.len());
        for option in &options {
            prop_assert_eq!(r.cstr(), option.as_str());
        }
        r.done();
    }

    #[test]
    fn query(sql in text()) {
        let frame = one_frame(&messages::query(&sql));
        prop_assert_eq!(frame.tag(), b'Q');
        let mut r = Reader(frame.body());
        prop_assert_eq!(r.cstr(), sql);
        r.done();
    }

    #[test]
    fn parse_with_parse_rest(name in text(), sql in text()) {
        let rest = messages::parse_rest(&sql);
        let frame = one_frame(&messages::parse_renamed(&name, &rest));
        prop_assert_eq!(frame.tag(), b'P');
        let body = messages::parse_body(frame.body()).expect("unreadable Parse");
        prop_assert_eq!(body.name, name.as_bytes());
        prop_assert_eq!(body.query, sql.as_bytes());
        prop_assert_eq!(body.rest_after_name, &rest[..]);
        let mut r = Reader(body.rest_after_name);
        prop_assert_eq!(r.cstr(), sql);
        prop_assert_eq!(r.i16(), 0); // no parameter types
        r.done();
    }

    #[test]
    fn parse_renamed_keeps_parameter_types(
        name in text(),
        sql in text(),
        types in prop::collection::vec(any::<u32>(), 0..8),
    ) {
        let mut rest = sql.clone().into_bytes();
        rest.push(0);
        rest.extend_from_slice(&(types.len() as i16).to_be_bytes());
        types.iter().for_each(|t| rest.extend_from_slice(&t.to_be_bytes()));
        let frame = one_frame(&messages::parse_renamed(&name, &rest));
        let body = messages::parse_body(frame.body()).expect("unreadable Parse");
        prop_assert_eq!(body.name, name.as_bytes());
        prop_assert_eq!(body.query, sql.as_bytes());
        prop_assert_eq!(body.rest_after_name, &rest[..]);
    }

    #[test]
    fn bind_renamed(portal in text(), statement in text(), rest in prop::collection::vec(any::<u8>(), 0..64)) {
        let frame = one_frame(&messages::bind_renamed(portal.as_bytes(), &statement, &rest));
        prop_assert_eq!(frame.tag(), b'B');
        prop_assert_eq!(
            messages::bind_body(frame.body()),
            Some((portal.as_bytes(), statement.as_bytes(), &rest[..]))
        );
    }

    #[test]
    fn describe_or_close(
        tag in prop::sample::select(vec![b'D', b'C']),
        kind in prop::sample::select(vec![b'S', b'P']),
        name in text(),
    ) {
        let frame = one_frame(&messages::describe_or_close(tag, kind, &name));
        prop_assert_eq!(frame.tag(), tag);
        prop_assert_eq!(messages::describe_or_close_body(frame.body()), Some((kind, name.as_bytes())));
        prop_assert_eq!(frame.body().len(), name.len() + 2);
    }

    #[test]
    fn cancel_request(process_id in any::<i32>(), secret in any::<i32>()) {
        let packet = messages::cancel_request(process_id, secret);
        prop_assert_eq!(packet.len(), 16);
        let mut partial = BytesMut::from(&packet[..15]);
        prop_assert_eq!(startup::decode(&mut partial), Ok(None));
        let mut buf = BytesMut::from(&packet[..]);
        prop_assert_eq!(
            startup::decode(&mut buf),
            Ok(Some(StartupPacket::Cancel { process_id, secret }))
        );
        prop_assert!(buf.is_empty());
    }

    /// Messages sent back to back come out as the same sequence whatever
    /// sizes the reads deliver them in.
    #[test]
    fn streams_split_back_into_messages_whatever_the_chunking(
        sent in prop::collection::vec(message(), 0..24),
        chunks in prop::collection::vec(1usize..48, 1..16),
    ) {
        let stream: Vec<u8> = sent.iter().flat_map(|m| m.iter().copied()).collect();
        let mut buf = BytesMut::new();
        let mut received: Vec<Bytes> = Vec::new();
        let mut offset = 0;
        for size in chunks.iter().cycle() {
            if offset == stream.len() {
                break;
            }
            let end = (offset + size).min(stream.len());
            buf.extend_from_slice(&stream[offset..end]);
            offset = end;
            while let Some(frame) = frame::decode(&mut buf, MAX).expect("framing error") {
                received.push(Bytes::copy_from_slice(frame.bytes()));
            }
            // Whatever is left is less than one whole message.
            let consumed: usize = received.iter().map(Bytes::len).sum();
            prop_assert_eq!(consumed + buf.len(), offset);
            prop_assert!(received.len() == sent.len() || buf.len() < sent[received.len()].len());
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(received, sent);
    }
}

/// A setting in the `options` startup parameter, in one of the spellings
/// PostgreSQL accepts.
#[derive(Debug, Clone)]
struct OptionSetting {
    name: String,
    value: String,
    form: u8,
}

impl OptionSetting {
    fn encode(&self) -> String {
        let mut escaped = String::new();
        for c in self.value.chars() {
            if c == '\\' || c.is_ascii_whitespace() {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        match self.form % 3 {
            0 => format!("-c {}={escaped}", self.name),
            1 => format!("-c{}={escaped}", self.name),
            _ => format!("--{}={escaped}", self.name),
        }
    }
}

fn option_setting() -> impl Strategy<Value = OptionSetting> {
    ("[a-z][a-z_-]{0,12}", "[^\u{0}]{0,16}", any::<u8>())
        .prop_map(|(name, value, form)| OptionSetting { name, value, form })
}

proptest! {
    /// A startup packet decodes to the user, database and parameters it
    /// was built with, `options` expanded and `_pq_.` options set apart.
    #[test]
    fn startup_packets(
        minor in 0i32..=0xffff,
        user in "[^\u{0}]{1,16}",
        database in prop::option::of("[^\u{0}]{1,16}"),
        parameters in prop::collection::vec((name(), text()), 0..6),
        options in prop::collection::vec(option_setting(), 0..4),
        protocol_options in prop::collection::vec(name(), 0..3),
        split in any::<prop::sample::Index>(),
    ) {
        // Names startup treats specially are covered by the fixed fields.
        let parameters: Vec<(String, String)> = parameters
            .into_iter()
            .filter(|(n, _)| !["user", "database", "options", "replication"].contains(&n.as_str()))
            .collect();
        let mut fields: Vec<(String, String)> = vec![("user".into(), user.clone())];
        if let Some(database) = &database {
            fields.push(("database".into(), database.clone()));
        }
        fields.extend(parameters.iter().cloned());
        if !options.is_empty() {
            let joined: Vec<String> = options.iter().map(OptionSetting::encode).collect();
            fields.push(("options".into(), joined.join(" ")));
        }
        let protocol_options: Vec<String> =
            protocol_options.iter().map(|o| format!("_pq_.{o}")).collect();
        for option in &protocol_options {
            fields.push((option.clone(), "on".into()));
        }

        let mut payload = Vec::new();
        for (name, value) in &fields {
            for s in [name, value] {
                payload.extend_from_slice(s.as_bytes());
                payload.push(0);
            }
        }
        payload.push(0);
        let mut packet = Vec::new();
        packet.extend_from_slice(&(8 + payload.len() as i32).to_be_bytes());
        packet.extend_from_slice(&(PROTOCOL_3_0 | minor).to_be_bytes());
        packet.extend_from_slice(&payload);
        // The next packet's bytes must be left alone.
        packet.extend_from_slice(b"Q\0\0\0\x05\0");

        let cut = split.index(packet.len() - 6);
        let mut buf = BytesMut::from(&packet[..cut]);
        prop_assert_eq!(startup::decode(&mut buf), Ok(None));
        buf.extend_from_slice(&packet[cut..]);
        let Ok(Some(StartupPacket::Startup(request))) = startup::decode(&mut buf) else {
            panic!("not decoded as a startup packet");
        };
        prop_assert_eq!(&buf[..], b"Q\0\0\0\x05\0");
        prop_assert_eq!(request.minor_version, minor);
        prop_assert_eq!(&request.user, &user);
        prop_assert_eq!(&request.database, database.as_ref().unwrap_or(&user));
        let mut expected = parameters.clone();
        expected.extend(options.iter().map(|o| (o.name.replace('-', "_"), o.value.clone())));
        prop_assert_eq!(request.parameters, expected);
        prop_assert_eq!(request.protocol_options, protocol_options);
    }

    /// SSLRequest and GSSENCRequest are recognised, and the startup packet
    /// that follows them is left for the next call.
    #[test]
    fn negotiation_requests_come_before_the_startup_packet(gss in any::<bool>(), user in name()) {
        let code = if gss { startup::GSSENC_REQUEST_CODE } else { startup::SSL_REQUEST_CODE };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&code.to_be_bytes());
        let body = format!("user\0{user}\0\0");
        buf.extend_from_slice(&(8 + body.len() as i32).to_be_bytes());
        buf.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        buf.extend_from_slice(body.as_bytes());
        let expected = if gss { StartupPacket::GssEncRequest } else { StartupPacket::SslRequest };
        prop_assert_eq!(startup::decode(&mut buf), Ok(Some(expected)));
        let Ok(Some(StartupPacket::Startup(request))) = startup::decode(&mut buf) else {
            panic!("startup packet not decoded");
        };
        prop_assert_eq!(&request.user, &user);
        prop_assert!(buf.is_empty());
    }
}
