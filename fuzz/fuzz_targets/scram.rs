//! The server side of a SCRAM-SHA-256(-PLUS) exchange with fuzzer-chosen
//! client messages.
//!
//! Input layout: `selector client-first NUL client-final`. The selector
//! byte picks the connection's channel binding (`% 3`: 0 no TLS, 1 TLS but
//! the client chose plain SCRAM, 2 bound to `CERT_HASH`). Without a NUL only
//! `ScramServer::start` runs. Because the server nonce is random, two
//! placeholders in client-final are filled in by the target, so the fuzzer
//! can reach the success path:
//! - every `${nonce}` becomes the full nonce from the server-first message;
//! - a trailing `,p=${proof}` becomes the correct proof for password
//!   `PASSWORD` over everything before it.
//!
//! Invariants: the server-first message echoes the client nonce and the
//! verifier's salt and iterations; the binding flag agrees with the
//! connection; a correct proof is never rejected as a wrong password; an
//! accepted proof is the correct one (no forgery), bound to the right data,
//! and the server signature and revealed ClientKey are the ones RFC 5802
//! defines.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use pgsplit::protocol::scram::{Binding, ScramError, ScramServer, ScramVerifier};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "pencil";
/// The `tls-server-end-point` data of the pretend TLS connection.
const CERT_HASH: [u8; 32] = [0xab; 32];

/// The verifier plus what a client derives from the password (SaltedPassword
/// and the salt/iterations it was made with), computed once: 4096 PBKDF2
/// rounds per input would make the target uselessly slow.
struct Keys {
    verifier: ScramVerifier,
    salt_b64: String,
    iterations: String,
    salted: [u8; 32],
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let verifier = ScramVerifier::from_password(PASSWORD);
        let (_, server_first) =
            ScramServer::start(&verifier, b"n,,n=,r=probe", Binding::Unavailable).unwrap();
        let attr = |name: &str| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(name))
                .unwrap()
                .to_owned()
        };
        let (salt_b64, iterations) = (attr("s="), attr("i="));
        let salt = BASE64.decode(&salt_b64).unwrap();
        let salted = hi(PASSWORD.as_bytes(), &salt, iterations.parse().unwrap());
        Keys {
            verifier,
            salt_b64,
            iterations,
            salted,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let binding = match selector % 3 {
        0 => Binding::Unavailable,
        1 => Binding::Declined,
        _ => Binding::Bound(&CERT_HASH),
    };
    let (client_first, client_final) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let (server, server_first) = match ScramServer::start(&keys.verifier, client_first, binding) {
        Ok(started) => started,
        Err(_) => return,
    };
    // What the server must have understood of client-first.
    let text = std::str::from_utf8(client_first).unwrap();
    let bare = text
        .splitn(3, ',')
        .nth(2)
        .expect("started without a gs2 header");
    let gs2_header = &text[..text.len() - bare.len()];
    let flag = gs2_header.split(',').next().unwrap();
    let binding_data: &[u8] = match binding {
        Binding::Unavailable => {
            assert!(flag == "n" || flag == "y");
            &[]
        }
        Binding::Declined => {
            assert_eq!(flag, "n");
            &[]
        }
        Binding::Bound(data) => {
            assert_eq!(flag, "p=tls-server-end-point");
            data
        }
    };
    let client_nonce = bare.split(',').find_map(|a| a.strip_prefix("r=")).unwrap();
    let nonce = server_first
        .strip_prefix("r=")
        .and_then(|rest| rest.split(',').next())
        .expect("server-first without a nonce");
    assert!(nonce.starts_with(client_nonce) && nonce.len() > client_nonce.len());
    assert!(!nonce.contains(','));
    assert_eq!(
        server_first,
        format!("r={nonce},s={},i={}", keys.salt_b64, keys.iterations)
    );

    let Some(client_final) = client_final else {
        return;
    };
    let Ok(client_final) = std::str::from_utf8(client_final) else {
        assert!(server.finish(client_final).is_err());
        return;
    };
    let mut client_final = client_final.replace("${nonce}", nonce);
    let filled_in_proof = match client_final.strip_suffix(",p=${proof}") {
        Some(without_proof) => {
            let auth = format!("{bare},{server_first},{without_proof}");
            let proof = BASE64.encode(client_proof(&keys.salted, &auth));
            client_final = format!("{without_proof},p={proof}");
            true
        }
        None => false,
    };
    let without_proof = client_final
        .rsplit_once(",p=")
        .map(|(w, p)| (w.to_owned(), p.to_owned()));
    let result = server.finish(client_final.as_bytes());
    if filled_in_proof {
        assert!(
            !matches!(result, Err(ScramError::WrongPassword)),
            "correct proof rejected"
        );
    }
    if let Ok(success) = result {
        let (without_proof, proof) = without_proof.expect("accepted without a proof");
        // Accepted messages echo the gs2 header, the binding data and the nonce.
        let mut cbind = gs2_header.as_bytes().to_vec();
        cbind.extend_from_slice(binding_data);
        assert!(without_proof.starts_with(&format!("c={},r={nonce}", BASE64.encode(cbind))));
        let auth = format!("{bare},{server_first},{without_proof}");
        assert_eq!(
            BASE64.decode(proof).ok(),
            Some(client_proof(&keys.salted, &auth).to_vec()),
            "accepted a proof that is not the correct one"
        );
        let server_key = hmac(&keys.salted, b"Server Key");
        let signature = hmac(&server_key, auth.as_bytes());
        assert_eq!(
            success.server_final,
            format!("v={}", BASE64.encode(signature))
        );
        assert_eq!(success.client_key, hmac(&keys.salted, b"Client Key"));
    }
});

/// ClientProof = ClientKey XOR HMAC(H(ClientKey), AuthMessage).
///
/// The client side is written out here from RFC 5802 on purpose, not taken
/// from `pgsplit::protocol::scram`: an oracle that shared pgsplit's HMAC and
/// `Hi` could not catch a mistake in them.
fn client_proof(salted: &[u8; 32], auth_message: &str) -> [u8; 32] {
    let client_key = hmac(salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let mut proof = client_key;
    proof.iter_mut().zip(signature).for_each(|(p, s)| *p ^= s);
    proof
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256, one block (RFC 5802's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut result = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        result.iter_mut().zip(u).for_each(|(r, x)| *r ^= x);
    }
    result
}
