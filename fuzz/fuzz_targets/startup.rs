//! The first packets of a client connection: SSLRequest / GSSENCRequest
//! (answered `N`, after which the client sends another packet),
//! CancelRequest, or a startup packet, after which the rest of the input is
//! the ordinary message stream, as in `frontend::login::negotiate`.
//!
//! Invariants: a packet consumes exactly its length field; a startup
//! request has a user, a database and only `_pq_.` protocol options, and
//! its NegotiateProtocolVersion reply frames back correctly; every error is
//! FATAL and encodes to an ErrorResponse carrying its SQLSTATE.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::protocol::error::Severity;
use pgsplit::protocol::frame;
use pgsplit::protocol::messages::{error_fields, negotiate_protocol_version, read_cstr, read_i32};
use pgsplit::protocol::startup::{self, StartupPacket, MAX_STARTUP_PACKET_LENGTH};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let length = buf
            .get(..4)
            .map(|h| i32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        match startup::decode(&mut buf) {
            Ok(None) => {
                assert_eq!(buf.len(), before);
                if let Some(length) = length {
                    assert!((8..=MAX_STARTUP_PACKET_LENGTH as i32).contains(&length));
                    assert!(before < length as usize);
                }
                return;
            }
            Ok(Some(packet)) => {
                let length = length.expect("a packet without a length") as usize;
                assert_eq!(before - buf.len(), length);
                match packet {
                    StartupPacket::SslRequest | StartupPacket::GssEncRequest => continue,
                    StartupPacket::Cancel { .. } => {
                        assert_eq!(length, 16);
                        return;
                    }
                    StartupPacket::Startup(request) => {
                        assert!(!request.user.is_empty());
                        assert!(!request.database.is_empty());
                        assert!(request.minor_version >= 0 && request.minor_version <= 0xffff);
                        let strings = request.parameters.iter().flat_map(|(n, v)| [n, v]);
                        for s in strings.chain([&request.user, &request.database]) {
                            assert!(!s.contains('\0'));
                        }
                        for option in &request.protocol_options {
                            assert!(option.starts_with("_pq_.") && !option.contains('\0'));
                        }
                        let reply = negotiate_protocol_version(0, &request.protocol_options);
                        check_negotiate(&reply, &request.protocol_options);
                        // Authentication and the session read frames next.
                        while let Ok(Some(_)) = frame::decode(&mut buf, 1 << 20) {}
                        return;
                    }
                }
            }
            Err(error) => {
                assert_eq!(error.severity, Severity::Fatal);
                let mut message = BytesMut::from(&error.to_message()[..]);
                let frame = frame::decode(&mut message, usize::MAX)
                    .expect("unframeable error")
                    .expect("partial error");
                assert!(message.is_empty());
                assert_eq!(frame.tag(), b'E');
                let fields = error_fields(frame.body());
                assert_eq!(fields.code, Some(error.code.as_bytes()));
                assert_eq!(fields.severity, Some(&b"FATAL"[..]));
                return;
            }
        }
    }
});

fn check_negotiate(reply: &[u8], options: &[String]) {
    let mut buf = BytesMut::from(reply);
    let frame = frame::decode(&mut buf, usize::MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(frame.tag(), b'v');
    let (minor, rest) = read_i32(frame.body()).unwrap();
    assert_eq!(minor, 0);
    let (count, mut rest) = read_i32(rest).unwrap();
    assert_eq!(count as usize, options.len());
    for option in options {
        let (name, tail) = read_cstr(rest).unwrap();
        assert_eq!(name, option.as_bytes());
        rest = tail;
    }
    assert!(rest.is_empty());
}
