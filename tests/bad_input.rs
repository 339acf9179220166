//! Malformed, hostile or simply unlucky clients, speaking the wire protocol
//! by hand: pgsplit must answer with the SQLSTATE PostgreSQL would send,
//! close the connection when the stream cannot be trusted any more, leave
//! no transaction half-done, and keep serving everyone else. Where
//! PostgreSQL's exact behaviour matters, the primary itself (over its unix
//! socket, trust auth) is the reference.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgsplit::cluster::{APP_DATABASE, APP_MD5_PASSWORD, APP_MD5_USER, APP_PASSWORD, APP_USER};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::error::SqlState;

const PROTOCOL_3_0: i32 = 3 << 16;
const CANCEL_REQUEST_CODE: i32 = 80_877_102;
const SSL_REQUEST_CODE: i32 = 80_877_103;
const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Longest a test waits for any single reply from pgsplit.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// `max_message_size` of the trust proxy (the smallest the config allows).
const SMALL_MESSAGE_LIMIT: usize = 1024;

/// One backend message: its type byte and the body after the length.
type Message = (u8, Vec<u8>);

/// A proxy that lets `app` in without a password (so raw clients skip
/// SCRAM) and accepts messages of at most [`SMALL_MESSAGE_LIMIT`] bytes.
fn trust_proxy() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        common::start_proxy(&format!(
            "auth_method: trust\nmax_message_size: {SMALL_MESSAGE_LIMIT}\n"
        ))
    })
}

// ---------------------------------------------------------------------------
// Building frontend messages.

fn cstr(s: &[u8]) -> Vec<u8> {
    let mut out = s.to_vec();
    out.push(0);
    out
}

/// A startup-phase packet: length, 32-bit code, payload.
fn packet(code: i32, payload: &[u8]) -> Vec<u8> {
    let length = i32::try_from(8 + payload.len()).expect("packet length");
    let mut out = length.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A protocol 3.0 startup message with the given parameters.
fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (name, value) in params {
        payload.extend(cstr(name.as_bytes()));
        payload.extend(cstr(value.as_bytes()));
    }
    payload.push(0);
    packet(PROTOCOL_3_0, &payload)
}

fn app_startup() -> Vec<u8> {
    startup(&[("user", APP_USER), ("database", APP_DATABASE)])
}

/// A regular message: tag, length (counting itself), body.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let length = i32::try_from(4 + body.len()).expect("message length");
    let mut out = vec![tag];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Only the five-byte header of a message, with an arbitrary length field.
fn header(tag: u8, length: i32) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&length.to_be_bytes());
    out
}

fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &cstr(sql.as_bytes()))
}

fn parse(statement: &str, sql: &str) -> Vec<u8> {
    let mut body = cstr(statement.as_bytes());
    body.extend(cstr(sql.as_bytes()));
    body.extend_from_slice(&0i16.to_be_bytes()); // no parameter types
    message(b'P', &body)
}

/// Bind without parameters, all results in text format.
fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut body = cstr(portal.as_bytes());
    body.extend(cstr(statement.as_bytes()));
    body.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
    body.extend_from_slice(&0i16.to_be_bytes()); // parameters
    body.extend_from_slice(&0i16.to_be_bytes()); // result formats
    message(b'B', &body)
}

fn describe_statement(statement: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr(statement.as_bytes()));
    message(b'D', &body)
}

fn execute(portal: &str) -> Vec<u8> {
    let mut body = cstr(portal.as_bytes());
    body.extend_from_slice(&0i32.to_be_bytes()); // no row limit
    message(b'E', &body)
}

fn sync() -> Vec<u8> {
    message(b'S', &[])
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------
// Reading backend messages.

/// The next backend message, or `None` once the connection is closed
/// (EOF or reset) at a message boundary. Panics if nothing arrives within
/// [`REPLY_TIMEOUT`] or a message is cut short.
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Message> {
    tokio::time::timeout(REPLY_TIMEOUT, read_message_untimed(stream))
        .await
        .unwrap_or_else(|_| {
            panic!("no message and no EOF from the server within {REPLY_TIMEOUT:?}")
        })
}

async fn read_message_untimed<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Message> {
    let mut tag = [0u8; 1];
    match stream.read(&mut tag).await {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("reading a message: {e}"),
    }
    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .await
        .expect("message length cut short");
    let length = i32::from_be_bytes(length);
    assert!(
        (4..1 << 20).contains(&length),
        "implausible length {length} of backend message {:?}",
        tag[0] as char
    );
    let mut body = vec![0; length as usize - 4];
    stream
        .read_exact(&mut body)
        .await
        .expect("message body cut short");
    Some((tag[0], body))
}

/// A field (`b'C'` = SQLSTATE, `b'V'` = severity, `b'M'` = message) of an
/// ErrorResponse or NoticeResponse body.
fn error_field(body: &[u8], field: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if code == field {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The SQLSTATE of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    error_field(body, b'C').expect("ErrorResponse without a SQLSTATE (C) field")
}

/// A short human-readable rendering of a message, for assertion messages.
fn describe(message: &Message) -> String {
    let (tag, body) = message;
    match tag {
        b'E' | b'N' => format!(
            "{} {} {}: {}",
            *tag as char,
            error_field(body, b'V').unwrap_or_default(),
            error_field(body, b'C').unwrap_or_default(),
            error_field(body, b'M').unwrap_or_default()
        ),
        b'Z' | b'C' => format!("{} {}", *tag as char, String::from_utf8_lossy(body)),
        _ => format!("{} ({} bytes)", *tag as char, body.len()),
    }
}

/// Reads an ErrorResponse with SQLSTATE `code`; returns its severity.
async fn expect_error<S: AsyncRead + Unpin>(stream: &mut S, code: &str, case: &str) -> String {
    let Some(message) = read_message(stream).await else {
        panic!("{case}: connection closed, expected ErrorResponse {code}");
    };
    assert_eq!(
        message.0,
        b'E',
        "{case}: expected ErrorResponse {code}, got {}",
        describe(&message)
    );
    assert_eq!(
        sqlstate(&message.1),
        code,
        "{case}: wrong SQLSTATE in {}",
        describe(&message)
    );
    error_field(&message.1, b'V')
        .or_else(|| error_field(&message.1, b'S'))
        .expect("ErrorResponse without a severity")
}

/// The server must close the connection without sending anything more.
async fn expect_eof<S: AsyncRead + Unpin>(stream: &mut S, case: &str) {
    if let Some(message) = read_message(stream).await {
        panic!(
            "{case}: expected the connection to be closed, got {}",
            describe(&message)
        );
    }
}

/// A FATAL ErrorResponse with SQLSTATE `code`, then the connection closes.
async fn expect_fatal_then_eof<S: AsyncRead + Unpin>(stream: &mut S, code: &str, case: &str) {
    let severity = expect_error(stream, code, case).await;
    assert_eq!(severity, "FATAL", "{case}: severity of the error");
    expect_eof(stream, case).await;
}

/// Messages up to and including the next ReadyForQuery.
async fn read_until_ready<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<Message> {
    let mut messages = Vec::new();
    loop {
        let message = read_message(stream).await.unwrap_or_else(|| {
            panic!("connection closed before ReadyForQuery, after {messages:?}")
        });
        let done = message.0 == b'Z';
        messages.push(message);
        if done {
            return messages;
        }
    }
}

/// Reads AuthenticationOk, ParameterStatus/BackendKeyData and the first
/// ReadyForQuery of a login that needs no password.
async fn finish_login<S: AsyncRead + Unpin>(stream: &mut S) {
    let first = read_message(stream)
        .await
        .expect("connection closed during login");
    assert_eq!(
        (first.0, first.1.as_slice()),
        (b'R', &[0u8, 0, 0, 0][..]),
        "expected AuthenticationOk, got {}",
        describe(&first)
    );
    for message in read_until_ready(stream).await {
        match message.0 {
            b'S' | b'K' | b'N' => {}
            b'Z' => assert_eq!(message.1, b"I", "status after login"),
            _ => panic!("unexpected message during login: {}", describe(&message)),
        }
    }
}

/// A raw connection to the trust proxy, logged in as `app`.
async fn login_trust() -> TcpStream {
    let mut stream = TcpStream::connect(trust_proxy()).await.expect("connect");
    stream
        .write_all(&app_startup())
        .await
        .expect("send startup");
    finish_login(&mut stream).await;
    stream
}

/// Runs a simple query that returns one value and returns it as text.
async fn query_value<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, sql: &str) -> String {
    stream.write_all(&query(sql)).await.expect("send query");
    let messages = read_until_ready(stream).await;
    let summary: Vec<String> = messages.iter().map(describe).collect();
    let tags: Vec<u8> = messages.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"TDCZ", "reply to {sql:?}: {summary:?}");
    let row = &messages[1].1;
    assert_eq!(&row[..2], &1i16.to_be_bytes(), "one column");
    let length = i32::from_be_bytes(row[2..6].try_into().expect("4 bytes"));
    String::from_utf8(row[6..6 + length as usize].to_vec()).expect("UTF-8 value")
}

/// The proxy still serves an ordinary client (tokio-postgres with SCRAM or trust).
async fn assert_proxy_healthy(addr: SocketAddr) {
    let client = common::connect(addr).await;
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .expect("query through pgsplit after bad clients");
    assert_eq!(row.get::<_, i32>(0), 42);
}

async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("send to pgsplit");
}

// ---------------------------------------------------------------------------
// Startup phase.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_startup_packets_get_the_postgres_sqlstate_and_are_closed() {
    let addr = common::proxy();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "HTTP request instead of a startup packet",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            "08P01",
        ),
        (
            "startup length 4 (< 8)",
            vec![0, 0, 0, 4, 0, 0, 0, 0],
            "08P01",
        ),
        ("negative startup length", vec![0xff; 8], "08P01"),
        ("protocol 2.0", packet(2 << 16, b"user\0app\0\0"), "0A000"),
        ("protocol 4.0", packet(4 << 16, b"user\0app\0\0"), "0A000"),
        (
            "startup without user",
            startup(&[("database", APP_DATABASE)]),
            "28000",
        ),
        (
            "startup with an empty user",
            startup(&[("user", ""), ("database", APP_DATABASE)]),
            "28000",
        ),
        (
            "startup parameters without the final terminator",
            packet(PROTOCOL_3_0, b"user\0app\0database\0app"),
            "08P01",
        ),
        (
            "startup parameter that is not UTF-8",
            packet(PROTOCOL_3_0, b"user\0\xff\xfe\0\0"),
            "08P01",
        ),
        (
            "replication connection",
            startup(&[("user", APP_USER), ("replication", "true")]),
            "0A000",
        ),
        (
            "cancel request of the wrong length",
            packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1]),
            "08P01",
        ),
    ];
    for (case, bytes, code) in &cases {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        send(&mut stream, bytes).await;
        expect_fatal_then_eof(&mut stream, code, case).await;
    }
    assert_proxy_healthy(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_startup_packets_and_stray_cancels_are_closed_quietly() {
    let addr = common::proxy();

    // A startup packet announcing 100 bytes, of which only 10 arrive.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut partial = 100i32.to_be_bytes().to_vec();
    partial.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    partial.extend_from_slice(b"us");
    send(&mut stream, &partial).await;
    stream.shutdown().await.expect("half-close");
    expect_eof(&mut stream, "truncated startup packet").await;

    // Only two bytes of the length.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    send(&mut stream, &[0, 0]).await;
    stream.shutdown().await.expect("half-close");
    expect_eof(&mut stream, "truncated length").await;

    // A cancel request for a session that does not exist: no reply.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut key = 12345i32.to_be_bytes().to_vec();
    key.extend_from_slice(&678i32.to_be_bytes());
    send(&mut stream, &packet(CANCEL_REQUEST_CODE, &key)).await;
    expect_eof(&mut stream, "cancel request with an unknown key").await;

    // Connect and hang up at once, a few times in parallel.
    let mut hangups = Vec::new();
    for _ in 0..20 {
        hangups.push(tokio::spawn(async move {
            drop(TcpStream::connect(addr).await.expect("connect"));
        }));
    }
    for hangup in hangups {
        hangup.await.expect("hang-up task");
    }
    assert_proxy_healthy(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authentication_messages_are_refused() {
    let addr = common::proxy();
    // Each case: after the startup packet pgsplit asks for SCRAM
    // (AuthenticationSASL); the client answers with something wrong.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a query instead of a password message", query("SELECT 1")),
        (
            "a password message over the authentication limit",
            header(b'p', 100_000),
        ),
        (
            "an unsupported SASL mechanism",
            message(b'p', b"PLAIN\0\0\0\0\x04abcd"),
        ),
        ("a SASL message without a mechanism", message(b'p', b"")),
        (
            "a SASL initial response with a wrong length",
            message(b'p', b"SCRAM-SHA-256\0\0\0\0\x63n,,n=,r=abc"),
        ),
    ];
    for (case, bytes) in &cases {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        send(&mut stream, &app_startup()).await;
        let request = read_message(&mut stream)
            .await
            .unwrap_or_else(|| panic!("{case}: closed before the authentication request"));
        assert_eq!(request.0, b'R', "{case}: {}", describe(&request));
        assert_eq!(
            &request.1[..4],
            &10i32.to_be_bytes(),
            "{case}: AuthenticationSASL"
        );
        send(&mut stream, bytes).await;
        expect_fatal_then_eof(&mut stream, "08P01", case).await;
    }
    assert_proxy_healthy(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_report_postgres_sqlstates() {
    let addr = common::proxy();
    let cases = [
        (
            "wrong password",
            common::url(addr, APP_USER, "not-the-password", APP_DATABASE),
            SqlState::INVALID_PASSWORD,
        ),
        (
            "wrong password of the md5 user",
            common::url(addr, APP_MD5_USER, "nope", APP_DATABASE),
            SqlState::INVALID_PASSWORD,
        ),
        (
            "unknown user",
            common::url(addr, "no_such_user", "x", APP_DATABASE),
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        ),
        (
            "unknown database (relayed from PostgreSQL)",
            common::url(addr, APP_USER, APP_PASSWORD, "no_such_database"),
            SqlState::INVALID_CATALOG_NAME,
        ),
    ];
    for (case, url, code) in &cases {
        let error = match common::try_connect(url).await {
            Ok(_) => panic!("{case}: login succeeded"),
            Err(error) => error,
        };
        assert_eq!(error.code(), Some(code), "{case}: {error}");
    }
    // The same proxy lets the right passwords in.
    assert_proxy_healthy(addr).await;
    let md5 = common::try_connect(&common::url(
        addr,
        APP_MD5_USER,
        APP_MD5_PASSWORD,
        APP_DATABASE,
    ))
    .await
    .expect("md5 user logs in with the right password");
    let user: String = md5
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query as the md5 user")
        .get(0);
    assert_eq!(user, APP_MD5_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_max_client_connections_get_53300() {
    let addr = common::start_proxy("max_client_connections: 2\n");
    let url = common::app_url(addr);
    let first = common::try_connect(&url).await.expect("first client");
    let second = common::try_connect(&url).await.expect("second client");
    for attempt in 0..3 {
        let error = match common::try_connect(&url).await {
            Ok(_) => panic!("third client (attempt {attempt}) was let in"),
            Err(error) => error,
        };
        assert_eq!(
            error.code(),
            Some(&SqlState::TOO_MANY_CONNECTIONS),
            "{error}"
        );
    }
    // The clients that are in keep working.
    for client in [&first, &second] {
        let one: i32 = client
            .query_one("SELECT 1", &[])
            .await
            .expect("query")
            .get(0);
        assert_eq!(one, 1);
    }
    // Once one leaves, a new client gets its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let third = loop {
        match common::try_connect(&url).await {
            Ok(client) => break client,
            Err(error) if Instant::now() < deadline => {
                assert_eq!(
                    error.code(),
                    Some(&SqlState::TOO_MANY_CONNECTIONS),
                    "{error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("no room for a client after one left: {error}"),
        }
    };
    let one: i32 = third
        .query_one("SELECT 1", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_declined_and_plaintext_continues() {
    let addr = trust_proxy();
    let sequences: [(&str, &[i32]); 3] = [
        ("SSLRequest", &[SSL_REQUEST_CODE]),
        ("GSSENCRequest", &[GSSENC_REQUEST_CODE]),
        (
            "GSSENCRequest then SSLRequest",
            &[GSSENC_REQUEST_CODE, SSL_REQUEST_CODE],
        ),
    ];
    for (case, requests) in sequences {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        for &request in requests {
            send(&mut stream, &packet(request, &[])).await;
            let mut answer = [0u8; 1];
            tokio::time::timeout(REPLY_TIMEOUT, stream.read_exact(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("{case}: no answer"))
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(answer[0], b'N', "{case}: answer to request {request}");
        }
        // A plaintext startup on the same connection logs in as usual.
        send(&mut stream, &app_startup()).await;
        finish_login(&mut stream).await;
        assert_eq!(
            query_value(&mut stream, "SELECT 6 * 7").await,
            "42",
            "{case}"
        );
        send(&mut stream, &message(b'X', &[])).await;
        expect_eof(&mut stream, case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_after_client_login_timeout() {
    let addr = common::start_proxy("client_login_timeout: 1s\n");

    async fn time_to_close(addr: SocketAddr, first_bytes: Vec<u8>, case: &str) -> Duration {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&first_bytes).await.expect("send");
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(message) = read_message_untimed(&mut stream).await {
                // The only thing pgsplit may say is the SCRAM challenge request.
                assert_eq!(message.0, b'R', "{case}: {}", describe(&message));
            }
        })
        .await;
        assert!(closed.is_ok(), "{case}: still open after 5 s");
        started.elapsed()
    }

    let nothing = time_to_close(addr, Vec::new(), "no bytes at all");
    let partial = time_to_close(addr, app_startup()[..6].to_vec(), "half a startup packet");
    // A complete startup packet, then no answer to AuthenticationSASL.
    let no_password = time_to_close(addr, app_startup(), "no password message");
    let (nothing, partial, no_password) = tokio::join!(nothing, partial, no_password);
    for (case, elapsed) in [
        ("no bytes", nothing),
        ("partial startup", partial),
        ("no password", no_password),
    ] {
        assert!(
            elapsed >= Duration::from_millis(900),
            "{case}: closed after {elapsed:?}, before client_login_timeout"
        );
    }
    assert_proxy_healthy(addr).await;
}

// ---------------------------------------------------------------------------
// After login.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_after_login_get_08p01() {
    let limit = i32::try_from(SMALL_MESSAGE_LIMIT).expect("limit");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative message length", header(b'Q', -1)),
        ("message length 3 (< 4)", header(b'Q', 3)),
        ("message over max_message_size", header(b'Q', limit + 1)),
        ("huge message length", header(b'd', i32::MAX)),
        ("unknown message type '!'", message(b'!', &[])),
        ("unknown message type 0", message(0, b"abc")),
    ];
    for (case, bytes) in &cases {
        let mut stream = login_trust().await;
        send(&mut stream, bytes).await;
        expect_fatal_then_eof(&mut stream, "08P01", case).await;
    }

    // The same inside a transaction, where a server connection is attached
    // and `Execute`, `Sync`, unnamed `Bind` and `Describe` are forwarded
    // without a frame of their own.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Execute over max_message_size", header(b'E', limit + 1)),
        ("Sync with a negative length", header(b'S', -1)),
        ("Bind without a body", concat(&[message(b'B', &[]), sync()])),
        (
            "Bind without the statement name",
            concat(&[message(b'B', b"\0"), sync()]),
        ),
        (
            "Describe of an unknown kind",
            concat(&[message(b'D', b"X\0"), sync()]),
        ),
    ];
    for (case, bytes) in &cases {
        let mut stream = login_trust().await;
        send(&mut stream, &query("BEGIN; SELECT 1")).await;
        let replies = read_until_ready(&mut stream).await;
        let ready = replies.last().map(describe);
        assert_eq!(ready.as_deref(), Some("Z T"), "{case}: in a transaction");
        send(&mut stream, bytes).await;
        expect_fatal_then_eof(&mut stream, "08P01", case).await;
    }

    // Well-framed messages with unparseable bodies. PostgreSQL answers
    // these with ERROR 08P01 and keeps the session; pgsplit may instead
    // end the session with FATAL 08P01. Either way the client is told.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Bind without a body", concat(&[message(b'B', &[]), sync()])),
        (
            "Parse without a body",
            concat(&[message(b'P', &[]), sync()]),
        ),
        (
            "Parse without a terminator",
            concat(&[message(b'P', b"s\0SELECT 1"), sync()]),
        ),
        (
            "Describe without a body",
            concat(&[message(b'D', &[]), sync()]),
        ),
        (
            "Close without a body",
            concat(&[message(b'C', &[]), sync()]),
        ),
        ("Query without a terminator", message(b'Q', b"SELECT 1")),
    ];
    for (case, bytes) in &cases {
        let mut stream = login_trust().await;
        send(&mut stream, bytes).await;
        let severity = expect_error(&mut stream, "08P01", case).await;
        if severity == "FATAL" {
            expect_eof(&mut stream, case).await;
        } else {
            assert_eq!(severity, "ERROR", "{case}");
            let ready = read_message(&mut stream).await.expect("ReadyForQuery");
            assert_eq!(describe(&ready), "Z I", "{case}");
            assert_eq!(
                query_value(&mut stream, "SELECT 'ok'").await,
                "ok",
                "{case}"
            );
        }
    }

    // A query of exactly max_message_size bytes is fine.
    let mut stream = login_trust().await;
    let padding_len = SMALL_MESSAGE_LIMIT - 4 - 1 - "SELECT length('')".len();
    let sql = format!("SELECT length('{}')", "x".repeat(padding_len));
    assert_eq!(
        query(&sql).len(),
        SMALL_MESSAGE_LIMIT + 1,
        "tag + length field"
    );
    assert_eq!(
        query_value(&mut stream, &sql).await,
        padding_len.to_string()
    );

    assert_proxy_healthy(trust_proxy()).await;
}

/// A client that does not wait for AuthenticationOk (trust needs no round
/// trip) and pipelines its first queries behind the startup packet.
async fn pipeline_queries_behind_startup<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    side: &str,
) {
    stream
        .write_all(&concat(&[
            app_startup(),
            query("SELECT 'first'"),
            parse("", "SELECT 'second'"),
            bind("", ""),
            execute(""),
            sync(),
        ]))
        .await
        .expect("send");
    finish_login(stream).await;
    let first: Vec<String> = tokio::time::timeout(Duration::from_secs(5), read_until_ready(stream))
        .await
        .unwrap_or_else(|_| {
            panic!("{side}: no reply within 5 s to the query sent behind the startup packet")
        })
        .iter()
        .map(describe)
        .collect();
    assert_eq!(first.len(), 4, "{side}: T D C Z: {first:?}");
    assert_eq!(first[2], "C SELECT 1\0", "{side}");
    let second: Vec<u8> = read_until_ready(stream).await.iter().map(|m| m.0).collect();
    assert_eq!(second, b"12DCZ", "{side}");
    assert_eq!(
        query_value(stream, "SELECT 'third'").await,
        "third",
        "{side}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_pipelined_behind_the_startup_packet_are_answered() {
    let mut direct = UnixStream::connect(common::primary_socket())
        .await
        .expect("connect to the primary's socket");
    pipeline_queries_behind_startup(&mut direct, "PostgreSQL").await;
    let mut proxied = TcpStream::connect(trust_proxy()).await.expect("connect");
    pipeline_queries_behind_startup(&mut proxied, "pgsplit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_messages_after_login_end_the_session_quietly() {
    // Half a query, then the client goes away.
    let mut stream = login_trust().await;
    let mut partial = header(b'Q', 100);
    partial.extend_from_slice(b"SELE");
    send(&mut stream, &partial).await;
    stream.shutdown().await.expect("half-close");
    expect_eof(&mut stream, "truncated query").await;

    // Half a message inside an open transaction, then the client goes away:
    // the transaction must be rolled back, not left holding the table.
    common::primary_sql(
        "CREATE TABLE IF NOT EXISTS bad_input_truncated (id int); \
         GRANT ALL ON bad_input_truncated TO app",
    );
    let mut stream = login_trust().await;
    send(
        &mut stream,
        &query("BEGIN; INSERT INTO bad_input_truncated VALUES (1)"),
    )
    .await;
    let reply = read_until_ready(&mut stream).await;
    assert_eq!(reply.last().map(describe).as_deref(), Some("Z T"));
    send(&mut stream, &header(b'Q', 50)).await;
    stream.shutdown().await.expect("half-close");
    expect_eof(&mut stream, "truncated query in a transaction").await;

    // A protocol violation inside an open transaction: FATAL, and the
    // transaction is rolled back too.
    let mut stream = login_trust().await;
    send(
        &mut stream,
        &query("BEGIN; INSERT INTO bad_input_truncated VALUES (2)"),
    )
    .await;
    let reply = read_until_ready(&mut stream).await;
    assert_eq!(reply.last().map(describe).as_deref(), Some("Z T"));
    send(&mut stream, &message(b'!', &[])).await;
    expect_fatal_then_eof(
        &mut stream,
        "08P01",
        "unknown message type in a transaction",
    )
    .await;

    assert_proxy_healthy(trust_proxy()).await;
    // The table is not left locked and the insert was not committed.
    let client = common::connect(trust_proxy()).await;
    let rows = tokio::time::timeout(
        REPLY_TIMEOUT,
        client.simple_query("BEGIN; LOCK TABLE bad_input_truncated; COMMIT"),
    )
    .await
    .expect("the aborted client's transaction still holds its lock");
    rows.expect("LOCK TABLE");
    assert_eq!(
        common::primary_sql("SELECT count(*) FROM bad_input_truncated"),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_prepared_statements_get_26000_and_the_session_continues() {
    let mut stream = login_trust().await;

    // Bind of a statement the client never prepared.
    send(
        &mut stream,
        &concat(&[bind("", "no_such_statement"), execute(""), sync()]),
    )
    .await;
    let severity = expect_error(&mut stream, "26000", "Bind of an unknown statement").await;
    assert_eq!(severity, "ERROR");
    let ready = read_message(&mut stream).await.expect("ReadyForQuery");
    assert_eq!(describe(&ready), "Z I", "after Sync");
    assert_eq!(
        query_value(&mut stream, "SELECT 'still here'").await,
        "still here"
    );

    // Describe of an unknown statement.
    send(
        &mut stream,
        &concat(&[describe_statement("no_such_statement"), sync()]),
    )
    .await;
    let severity = expect_error(&mut stream, "26000", "Describe of an unknown statement").await;
    assert_eq!(severity, "ERROR");
    let ready = read_message(&mut stream).await.expect("ReadyForQuery");
    assert_eq!(describe(&ready), "Z I", "after Sync");

    // A properly prepared statement works on the same session.
    send(
        &mut stream,
        &concat(&[
            parse("s1", "SELECT 7 * 6"),
            bind("", "s1"),
            execute(""),
            sync(),
        ]),
    )
    .await;
    let reply = read_until_ready(&mut stream).await;
    let summary: Vec<String> = reply.iter().map(describe).collect();
    let tags: Vec<u8> = reply.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"12DCZ", "{summary:?}");
    assert_eq!(query_value(&mut stream, "SELECT 1").await, "1");
    assert_proxy_healthy(trust_proxy()).await;
}

/// Sends each step (a batch ending in Query or Sync) and records what the
/// client sees, one line per message (descriptions and parse/bind
/// acknowledgements left out).
async fn transcript<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    steps: &[(&str, Vec<u8>)],
) -> Vec<String> {
    let mut lines = Vec::new();
    for (label, bytes) in steps {
        stream.write_all(bytes).await.expect("send");
        for message in read_until_ready(stream).await {
            let line = match message.0 {
                b'E' => format!("E {}", sqlstate(&message.1)),
                b'D' => {
                    let length = i32::from_be_bytes(message.1[2..6].try_into().expect("len"));
                    format!(
                        "D {}",
                        String::from_utf8_lossy(&message.1[6..6 + length as usize])
                    )
                }
                b'C' => format!(
                    "C {}",
                    String::from_utf8_lossy(message.1.strip_suffix(b"\0").unwrap_or(&message.1))
                ),
                b'T' | b'1' | b'2' | b'N' | b'S' => continue,
                _ => describe(&message),
            };
            lines.push(format!("{label}: {line}"));
        }
    }
    lines
}

/// Runs the steps `steps(run)` on the primary directly (unix socket, no
/// pgsplit) and through pgsplit, and asserts the client sees the same, the
/// rows written included. `run` labels the rows each side writes to the
/// table `bad_input_tx`.
async fn assert_same_as_postgres(steps: impl Fn(&str) -> Vec<(&'static str, Vec<u8>)>) {
    common::primary_sql(
        "CREATE TABLE IF NOT EXISTS bad_input_tx (run text, id int); \
         GRANT ALL ON bad_input_tx TO app",
    );
    let with_check = |run: &str| {
        let mut all = steps(run);
        all.push((
            "rows committed",
            query(&format!(
                "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), 'none') \
                 FROM bad_input_tx WHERE run = '{run}'"
            )),
        ));
        all
    };
    // Each call of this function uses its own labels, so tests may run in parallel.
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let mut direct = UnixStream::connect(common::primary_socket())
        .await
        .expect("connect to the primary's socket");
    direct.write_all(&app_startup()).await.expect("startup");
    finish_login(&mut direct).await;
    let expected = transcript(&mut direct, &with_check(&format!("direct{n}"))).await;

    let mut proxied = login_trust().await;
    let actual = transcript(&mut proxied, &with_check(&format!("proxied{n}"))).await;
    assert_eq!(
        actual, expected,
        "what the client sees through pgsplit (left) differs from PostgreSQL (right)"
    );
}

fn insert(run: &str, id: i32) -> String {
    format!("INSERT INTO bad_input_tx VALUES ('{run}', {id})")
}

// An error pgsplit raises on its own (without involving the server) must
// have the effect the same error has on PostgreSQL: it aborts the
// transaction it happens in. The reference is the primary itself.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_statement_in_a_transaction_block_aborts_it_like_postgres() {
    assert_same_as_postgres(|run| {
        vec![
            ("BEGIN", query("BEGIN")),
            ("INSERT", query(&insert(run, 1))),
            (
                "Bind unknown",
                concat(&[bind("", "no_such_statement"), execute(""), sync()]),
            ),
            ("SELECT after the error", query("SELECT 1")),
            ("COMMIT", query("COMMIT")),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_statement_in_an_extended_batch_rolls_the_batch_back_like_postgres() {
    assert_same_as_postgres(|run| {
        vec![(
            "INSERT then Bind unknown, one Sync",
            concat(&[
                parse("", &insert(run, 2)),
                bind("", ""),
                execute(""),
                bind("", "no_such_statement"),
                execute(""),
                sync(),
            ]),
        )]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_statement_name_in_a_transaction_block_aborts_it_like_postgres() {
    assert_same_as_postgres(|run| {
        vec![
            (
                "prepare s_dup",
                concat(&[parse("s_dup", "SELECT 1"), sync()]),
            ),
            ("BEGIN", query("BEGIN")),
            ("INSERT", query(&insert(run, 3))),
            (
                "Parse s_dup again",
                concat(&[parse("s_dup", "SELECT 2"), sync()]),
            ),
            ("COMMIT", query("COMMIT")),
        ]
    })
    .await;
}

/// The same script without errors behaves identically, so the three tests
/// above compare like with like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_free_transactions_match_postgres() {
    assert_same_as_postgres(|run| {
        vec![
            ("BEGIN", query("BEGIN")),
            ("INSERT", query(&insert(run, 4))),
            (
                "prepared SELECT",
                concat(&[
                    parse("s_ok", "SELECT 5"),
                    bind("", "s_ok"),
                    execute(""),
                    sync(),
                ]),
            ),
            ("COMMIT", query("COMMIT")),
            (
                "batch INSERT",
                concat(&[
                    parse("", &insert(run, 6)),
                    bind("", ""),
                    execute(""),
                    sync(),
                ]),
            ),
        ]
    })
    .await;
}

/// Runs a simple query that returns no rows and checks it succeeded.
async fn run_command(stream: &mut TcpStream, sql: &str) {
    send(stream, &query(sql)).await;
    let reply = read_until_ready(stream).await;
    let summary: Vec<String> = reply.iter().map(describe).collect();
    assert!(reply.iter().all(|m| m.0 != b'E'), "{sql:?}: {summary:?}");
}

/// A raw trust client whose transactions all go to the primary.
async fn login_trust_on_primary() -> TcpStream {
    let mut stream = login_trust().await;
    run_command(&mut stream, "SET pgsplit.route TO primary").await;
    stream
}

/// `SET search_path TO value` on `client` is tracked: another client takes
/// the server connection it just used (the pool hands out the most
/// recently used one first) and holds it, and `client` still sees its
/// setting on the connection it gets next.
async fn assert_setting_follows(client: &mut TcpStream, value: &str) {
    run_command(client, &format!("SET search_path TO {value}")).await;
    let mut other = login_trust_on_primary().await;
    run_command(&mut other, "BEGIN").await;
    assert_eq!(query_value(client, "SHOW search_path").await, value);
    run_command(&mut other, "ROLLBACK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_sent_after_requests_answered_without_a_server_are_tracked() {
    // A bare Flush needs no server connection.
    let mut client = login_trust_on_primary().await;
    send(&mut client, &message(b'H', b"")).await;
    assert_setting_follows(&mut client, "after_flush").await;

    // A request refused because the session's transaction lost its server.
    let mut client = login_trust_on_primary().await;
    run_command(&mut client, "BEGIN").await;
    let pid = query_value(&mut client, "SELECT pg_backend_pid()::text").await;
    common::primary_sql(&format!("SELECT pg_terminate_backend({pid})"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut client, &query("SELECT 1")).await;
    expect_error(
        &mut client,
        "57P01",
        "query after the server was terminated",
    )
    .await;
    let ready = read_message(&mut client).await.expect("ReadyForQuery");
    assert_eq!(describe(&ready), "Z I", "the lost transaction is over");
    assert_setting_follows(&mut client, "after_lost_server").await;
}
