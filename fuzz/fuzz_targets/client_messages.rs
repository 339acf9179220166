//! The post-startup message stream: arbitrary bytes are split into frames
//! the way a session reads its client (and server) socket, and every frame
//! goes through the body parsers its tag would meet in pgsplit.
//!
//! Invariants: framing never loses or invents bytes, each frame is exactly
//! its length field + 1 bytes, errors match the header that caused them,
//! and every parser's output is a piece of its input that re-encodes to
//! the same fields.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit::protocol::frame::{self, Frame, FrameError};
use pgsplit::protocol::messages::{
    bind_body, bind_renamed, describe_or_close, describe_or_close_body, error_fields, first_column,
    parse_body, parse_renamed, read_cstr, read_i32,
};

/// pgsplit's default `max_message_size` is far larger; a small limit lets
/// the fuzzer reach `TooLarge` as well as frames that fit.
const MAX_SIZE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    loop {
        let header = buf
            .get(..5)
            .map(|h| (h[0], i32::from_be_bytes([h[1], h[2], h[3], h[4]])));
        match frame::decode(&mut buf, MAX_SIZE) {
            Ok(Some(frame)) => {
                let (tag, length) = header.expect("a frame without a whole header");
                assert_eq!(frame.tag(), tag);
                assert_eq!(frame.bytes().len(), length as usize + 1);
                assert_eq!(
                    &frame.bytes()[..],
                    &data[consumed..consumed + frame.bytes().len()]
                );
                consumed += frame.bytes().len();
                assert_eq!(consumed + buf.len(), data.len());
                // A frame on its own decodes to itself with nothing left over.
                let mut alone = BytesMut::from(&frame.bytes()[..]);
                assert_eq!(frame::decode(&mut alone, MAX_SIZE), Ok(Some(frame.clone())));
                assert!(alone.is_empty());
                inspect(&frame);
            }
            Ok(None) => {
                assert_eq!(consumed + buf.len(), data.len());
                if let Some((_, length)) = header {
                    assert!((4..=MAX_SIZE as i64).contains(&(length as i64)));
                    assert!(
                        buf.len() < length as usize + 1,
                        "a whole frame was left undecoded"
                    );
                }
                break;
            }
            Err(FrameError::InvalidLength { tag, length }) => {
                assert_eq!(header, Some((tag, length)));
                assert!(length < 4);
                break;
            }
            Err(FrameError::TooLarge { tag, length, limit }) => {
                let (header_tag, header_length) = header.expect("an error without a header");
                assert_eq!(
                    (tag, length, limit),
                    (header_tag, header_length as usize, MAX_SIZE)
                );
                assert!(length > MAX_SIZE);
                break;
            }
        }
    }
});

/// Runs the parsers pgsplit applies to a frame with this tag (client and
/// server meanings of a tag letter both), checking what they return.
fn inspect(frame: &Frame) {
    let body = frame.body();
    check_cstr(body);
    match read_i32(body) {
        Some((value, rest)) => {
            assert_eq!(value.to_be_bytes(), body[..4]);
            assert_eq!(rest, &body[4..]);
        }
        None => assert!(body.len() < 4),
    }
    match frame.tag() {
        b'Q' => {
            if let Some((sql, _)) = read_cstr(body) {
                assert!(!sql.contains(&0));
            }
        }
        b'P' => {
            if let Some(parse) = parse_body(body) {
                assert!(body.starts_with(parse.name));
                assert_eq!(body[parse.name.len()], 0);
                assert_eq!(parse.rest_after_name, &body[parse.name.len() + 1..]);
                assert!(parse.rest_after_name.starts_with(parse.query));
                assert!(!parse.query.contains(&0));
                // Renaming (what the statement pool does) keeps the rest.
                if let Ok(name) = std::str::from_utf8(parse.name) {
                    let renamed = parse_renamed(name, parse.rest_after_name);
                    let again = parse_body(&renamed[5..]).expect("renamed Parse unreadable");
                    assert_eq!(again.name, parse.name);
                    assert_eq!(again.query, parse.query);
                    assert_eq!(again.rest_after_name, parse.rest_after_name);
                    assert_eq!(&renamed[..], frame.bytes());
                }
            } else {
                assert!(body.iter().filter(|&&b| b == 0).count() < 2);
            }
        }
        b'B' => {
            if let Some((portal, statement, rest)) = bind_body(body) {
                assert_eq!(portal.len() + statement.len() + rest.len() + 2, body.len());
                if let Ok(name) = std::str::from_utf8(statement) {
                    let renamed = bind_renamed(portal, name, rest);
                    assert_eq!(&renamed[..], frame.bytes());
                    assert_eq!(bind_body(&renamed[5..]), Some((portal, statement, rest)));
                }
            } else {
                assert!(body.iter().filter(|&&b| b == 0).count() < 2);
            }
        }
        // Describe and Close from the client ('D' is also a server DataRow).
        tag @ (b'D' | b'C') => {
            if let Some((kind, name)) = describe_or_close_body(body) {
                assert!(matches!(kind, b'S' | b'P'));
                assert_eq!(kind, body[0]);
                assert_eq!(&body[1..1 + name.len()], name);
                if let Ok(name_str) = std::str::from_utf8(name) {
                    let again = describe_or_close(tag, kind, name_str);
                    assert_eq!(describe_or_close_body(&again[5..]), Some((kind, name)));
                    assert!(body.starts_with(&again[5..]));
                }
            }
            if tag == b'D' {
                if let Some(column) = first_column(body) {
                    assert!(body.len() >= 6 + column.len());
                    assert_eq!(column, &body[6..6 + column.len()]);
                    assert_eq!(
                        read_i32(&body[2..]).map(|(l, _)| l as usize),
                        Some(column.len())
                    );
                }
            }
        }
        // ErrorResponse / NoticeResponse from a server ('E' is also Execute).
        b'E' | b'N' => {
            let fields = error_fields(body);
            for value in [fields.code, fields.severity, fields.message]
                .into_iter()
                .flatten()
            {
                assert!(!value.contains(&0));
                let start = value.as_ptr() as usize - body.as_ptr() as usize;
                assert!(start + value.len() < body.len(), "field outside the body");
                assert_eq!(body[start + value.len()], 0);
            }
        }
        _ => {}
    }
}

/// `read_cstr` splits exactly at the first NUL.
fn check_cstr(buf: &[u8]) {
    match read_cstr(buf) {
        Some((s, rest)) => {
            assert!(!s.contains(&0));
            assert_eq!(buf[s.len()], 0);
            assert_eq!(s.len() + 1 + rest.len(), buf.len());
        }
        None => assert!(!buf.contains(&0)),
    }
}
