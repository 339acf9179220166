//! SCRAM-SHA-256 (RFC 5802/7677): the server side, which authenticates
//! clients against the config's passwords or verifiers (with
//! `tls-server-end-point` channel binding for TLS clients), and the client
//! side, which logs in to the nodes.
//!
//! The expensive key derivation runs once per user when the config loads
//! (`ScramVerifier::from_password`); each login then costs a few HMACs.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The iteration count PostgreSQL uses by default (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
/// The mechanism name advertised in `AuthenticationSASL`.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// The channel-binding variant, offered to TLS clients.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// How a stored verifier starts (`pg_authid.rolpassword`).
pub const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

type HmacSha256 = Hmac<Sha256>;

/// What the server stores for a password: PostgreSQL's `pg_authid` form.
#[derive(Clone)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(<redacted>)")
    }
}

impl ScramVerifier {
    /// Derives a verifier with a fresh random salt, as `CREATE ROLE ...
    /// PASSWORD` does.
    pub fn from_password(password: &str) -> ScramVerifier {
        let salt: [u8; 16] = rand::random();
        Self::derive(password, &salt, ITERATIONS)
    }

    fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let (client_key, server_key) = derive_keys(password, salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key,
        }
    }

    /// Reads a verifier as PostgreSQL stores it:
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. The
    /// error says what is wrong without echoing the secret.
    pub fn parse(text: &str) -> Result<ScramVerifier, &'static str> {
        const SHAPE: &str =
            "is not a SCRAM verifier of the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
        let rest = text.strip_prefix(SCRAM_PREFIX).ok_or(SHAPE)?;
        let (parameters, keys) = rest.split_once('$').ok_or(SHAPE)?;
        let (iterations, salt) = parameters.split_once(':').ok_or(SHAPE)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(SHAPE)?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or("has an invalid iteration count")?;
        let salt = BASE64
            .decode(salt)
            .map_err(|_| "has a salt that is not base64")?;
        let key = |encoded: &str| -> Result<[u8; 32], &'static str> {
            BASE64
                .decode(encoded)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or("has a key that is not 32 bytes of base64")
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }

    /// The `ServerKey`, which lets pgsplit check a server's signature when
    /// it logs in with a client's `ClientKey`.
    pub fn server_key(&self) -> [u8; 32] {
        self.server_key
    }
}

/// `ClientKey` and `ServerKey` of a password with a salt and iteration count.
fn derive_keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_owned());
    let salted = hi(prepared.as_bytes(), salt, iterations);
    (hmac(&salted, b"Client Key"), hmac(&salted, b"Server Key"))
}

/// Channel binding on the connection a SCRAM exchange runs over.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// No TLS: only plain SCRAM-SHA-256 was offered.
    Unavailable,
    /// TLS, SCRAM-SHA-256-PLUS offered, and the client chose plain
    /// SCRAM-SHA-256.
    Declined,
    /// The client chose SCRAM-SHA-256-PLUS; the `tls-server-end-point` data
    /// (the hash of pgsplit's certificate) it must have bound to.
    Bound(&'a [u8]),
}

/// A successful exchange: the server-final message for the client, and the
/// `ClientKey` its proof revealed (what pgsplit logs in to the nodes with
/// when the config holds only a verifier).
pub struct ScramSuccess {
    /// The server-final message (`v=` and the server signature) to send.
    pub server_final: String,
    /// The client's `ClientKey`, recovered from its proof.
    pub client_key: [u8; 32],
}

/// Why a SCRAM exchange failed; all are reported to the client as a failed
/// password authentication except malformed messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message could not be parsed, or its nonce did not match; the text
    /// names the part.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client's channel binding does not fit the connection: a
    /// downgrade, an unsupported type, or data for another certificate.
    #[error("SCRAM channel binding check failed: {0}")]
    ChannelBinding(&'static str),
    /// The client's proof does not match the verifier: a wrong password.
    #[error("SCRAM proof did not match")]
    WrongPassword,
    /// Logging in to a node, the node's signature did not check out.
    #[error("the server's SCRAM signature is wrong: it does not know the password")]
    ServerSignature,
}

/// The state between the server-first and client-final messages.
pub struct ScramServer {
    verifier: ScramVerifier,
    /// The GS2 header plus any channel-binding data: what `c=` must hold.
    expected_binding: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Reads the client-first message and returns the state plus the
    /// server-first message to send in `AuthenticationSASLContinue`.
    pub fn start(
        verifier: &ScramVerifier,
        client_first: &[u8],
        binding: Binding<'_>,
    ) -> Result<(ScramServer, String), ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (cbind_flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        let binding_data: &[u8] = match (cbind_flag, binding) {
            ("n", Binding::Unavailable | Binding::Declined) | ("y", Binding::Unavailable) => &[],
            // The client could bind but believes the server cannot: a downgrade.
            ("y", _) => return Err(ScramError::ChannelBinding("downgraded by the client")),
            ("p=tls-server-end-point", Binding::Bound(data)) => data,
            (flag, Binding::Bound(_)) if flag.starts_with("p=") => {
                return Err(ScramError::ChannelBinding("unsupported binding type"))
            }
            (_, Binding::Bound(_)) => {
                return Err(ScramError::ChannelBinding(
                    "SCRAM-SHA-256-PLUS chosen without binding",
                ))
            }
            (flag, _) if flag.starts_with("p=") => {
                return Err(ScramError::ChannelBinding(
                    "binding requested without SCRAM-SHA-256-PLUS",
                ))
            }
            _ => return Err(ScramError::Malformed("channel binding flag")),
        };
        let (authzid, client_first_bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        let client_nonce = client_first_bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("client nonce"))?;
        let server_nonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", BASE64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&verifier.salt),
            verifier.iterations
        );
        let mut expected_binding = format!("{cbind_flag},{authzid},").into_bytes();
        expected_binding.extend_from_slice(binding_data);
        let state = ScramServer {
            verifier: verifier.clone(),
            expected_binding,
            client_first_bare: client_first_bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((state, server_first))
    }

    /// Checks the client-final message's proof; on success returns the
    /// server-final message (`v=...`) for `AuthenticationSASLFinal`.
    pub fn finish(self, client_final: &[u8]) -> Result<ScramSuccess, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("channel binding"))?;
        if BASE64.decode(binding).ok().as_deref() != Some(&self.expected_binding[..]) {
            return Err(ScramError::ChannelBinding("binding data mismatch"));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof: [u8; 32] = BASE64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof encoding"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        if !constant_time_eq(&computed, &self.verifier.stored_key) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(ScramSuccess {
            server_final: format!("v={}", BASE64.encode(server_signature)),
            client_key,
        })
    }
}

/// What pgsplit proves itself with when it logs in to a node.
#[derive(Clone)]
pub enum ScramSecret {
    /// The password: keys are derived with the server's salt.
    Password(String),
    /// Keys a client's login revealed; they work where the server stores
    /// the same verifier as the config (same salt and iterations).
    Keys {
        /// `ClientKey`: the proof sent to the node is made from it.
        client_key: [u8; 32],
        /// `ServerKey`: checks the node's signature.
        server_key: [u8; 32],
    },
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScramSecret::Password(_) => "Password(<redacted>)",
            ScramSecret::Keys { .. } => "Keys(<redacted>)",
        })
    }
}

/// The client side of an exchange with a node (no channel binding: TLS to
/// the nodes is verified by certificate, if at all).
pub struct ScramClient {
    secret: ScramSecret,
    client_first_bare: String,
    nonce: String,
    /// Expected server signature, once the client-final message is sent.
    server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    /// The state plus the client-first message.
    pub fn start(secret: ScramSecret) -> (ScramClient, String) {
        let nonce = BASE64.encode(rand::random::<[u8; 18]>());
        let client_first_bare = format!("n=,r={nonce}");
        let client_first = format!("n,,{client_first_bare}");
        let client = ScramClient {
            secret,
            client_first_bare,
            nonce,
            server_signature: None,
        };
        (client, client_first)
    }

    /// Answers the server-first message with the client-final message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        let attr = |name: &str| {
            text.split(',')
                .find_map(|a| a.strip_prefix(name))
                .ok_or(ScramError::Malformed("server-first message"))
        };
        let nonce = attr("r=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed("server nonce"));
        }
        let salt = BASE64
            .decode(attr("s=")?)
            .map_err(|_| ScramError::Malformed("salt"))?;
        let iterations: u32 = attr("i=")?
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or(ScramError::Malformed("iteration count"))?;
        let (client_key, server_key) = match &self.secret {
            ScramSecret::Password(password) => derive_keys(password, &salt, iterations),
            ScramSecret::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let proof = xor(&client_key, &hmac(&stored_key, auth_message.as_bytes()));
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server's signature, so a server that does not know the
    /// password cannot pose as the node.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or(ScramError::Malformed("server-final message"))?;
        match self.server_signature {
            Some(expected) if constant_time_eq(&expected, &signature) => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block: SCRAM's `Hi()`.
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// libpq's behaviour, through postgres-protocol's client.
    fn exchange_with(
        verifier: &ScramVerifier,
        client_password: &str,
        client_binding: ChannelBinding,
        binding: Binding<'_>,
    ) -> Result<[u8; 32], ScramError> {
        let mut client = ScramSha256::new(client_password.as_bytes(), client_binding);
        let (server, server_first) = ScramServer::start(verifier, client.message(), binding)?;
        client
            .update(server_first.as_bytes())
            .map_err(|_| ScramError::Malformed("client rejected server-first"))?;
        let success = server.finish(client.message())?;
        client
            .finish(success.server_final.as_bytes())
            .map_err(|_| ScramError::Malformed("client rejected server signature"))?;
        Ok(success.client_key)
    }

    fn exchange(server_password: &str, client_password: &str) -> Result<[u8; 32], ScramError> {
        exchange_with(
            &ScramVerifier::from_password(server_password),
            client_password,
            ChannelBinding::unsupported(),
            Binding::Unavailable,
        )
    }

    /// pgsplit's client against pgsplit's server.
    fn own_exchange(verifier: &ScramVerifier, secret: ScramSecret) -> Result<(), ScramError> {
        let (mut client, client_first) = ScramClient::start(secret);
        let (server, server_first) =
            ScramServer::start(verifier, client_first.as_bytes(), Binding::Unavailable)?;
        let client_final = client.respond(server_first.as_bytes())?;
        let success = server.finish(client_final.as_bytes())?;
        client.verify(success.server_final.as_bytes())
    }

    fn encode(verifier: &ScramVerifier) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            verifier.iterations,
            BASE64.encode(&verifier.salt),
            BASE64.encode(verifier.stored_key),
            BASE64.encode(verifier.server_key)
        )
    }

    #[test]
    fn accepts_the_right_password_and_proves_itself_to_the_client() {
        assert!(exchange("s3cret", "s3cret").is_ok());
    }

    #[test]
    fn rejects_a_wrong_password() {
        assert_eq!(exchange("s3cret", "guess"), Err(ScramError::WrongPassword));
    }

    #[test]
    fn the_revealed_client_key_logs_in_where_the_same_verifier_is_stored() {
        let verifier = ScramVerifier::from_password("s3cret");
        let parsed = ScramVerifier::parse(&encode(&verifier)).unwrap();
        let client_key = exchange_with(
            &parsed,
            "s3cret",
            ChannelBinding::unsupported(),
            Binding::Unavailable,
        )
        .unwrap();
        let keys = ScramSecret::Keys {
            client_key,
            server_key: parsed.server_key(),
        };
        assert_eq!(own_exchange(&verifier, keys), Ok(()));
        let wrong = ScramSecret::Keys {
            client_key: [7; 32],
            server_key: parsed.server_key(),
        };
        assert_eq!(
            own_exchange(&verifier, wrong),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn own_client_logs_in_with_a_password_and_checks_the_server() {
        let verifier = ScramVerifier::from_password("pw");
        assert_eq!(
            own_exchange(&verifier, ScramSecret::Password("pw".into())),
            Ok(())
        );
        let (mut client, _) = ScramClient::start(ScramSecret::Password("pw".into()));
        assert!(client.respond(b"r=someone-else,s=AAAA,i=4096").is_err());
        let first = format!("r={}x,s=AAAA,i=4096", client.nonce);
        client.respond(first.as_bytes()).unwrap();
        assert_eq!(
            client.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::ServerSignature)
        );
    }

    #[test]
    fn parses_verifiers_and_names_what_is_wrong() {
        let verifier = ScramVerifier::from_password("x");
        let parsed = ScramVerifier::parse(&encode(&verifier)).unwrap();
        assert_eq!(parsed.stored_key, verifier.stored_key);
        assert_eq!(parsed.salt, verifier.salt);
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==$abc",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "md5abc",
        ] {
            let error = ScramVerifier::parse(bad).err().unwrap();
            assert!(!error.contains("c2Fsd"), "{error}");
        }
    }

    #[test]
    fn channel_binding_must_match_the_certificate() {
        let verifier = ScramVerifier::from_password("pw");
        let cert_hash = [9u8; 32];
        let bound = |data: &[u8]| {
            exchange_with(
                &verifier,
                "pw",
                ChannelBinding::tls_server_end_point(data.to_vec()),
                Binding::Bound(&cert_hash),
            )
        };
        assert!(bound(&cert_hash).is_ok());
        assert!(matches!(
            bound(&[8u8; 32]),
            Err(ScramError::ChannelBinding(_))
        ));
        // A client that could bind but was told it cannot: a downgrade.
        assert!(matches!(
            ScramServer::start(&verifier, b"y,,n=,r=abc", Binding::Declined),
            Err(ScramError::ChannelBinding(_))
        ));
        assert!(ScramServer::start(&verifier, b"y,,n=,r=abc", Binding::Unavailable).is_ok());
        assert!(matches!(
            ScramServer::start(&verifier, b"n,,n=,r=abc", Binding::Bound(&cert_hash)),
            Err(ScramError::ChannelBinding(_))
        ));
    }

    #[test]
    fn matches_rfc7677_test_vector() {
        let verifier = ScramVerifier::derive(
            "pencil",
            &BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let (mut server, _) = ScramServer::start(
            &verifier,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            Binding::Unavailable,
        )
        .unwrap();
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into();
        let success = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            success.server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn rejects_malformed_and_unexpected_channel_binding() {
        let verifier = ScramVerifier::from_password("x");
        assert!(matches!(
            ScramServer::start(&verifier, b"garbage", Binding::Unavailable),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            ScramServer::start(
                &verifier,
                b"p=tls-server-end-point,,n=,r=abc",
                Binding::Unavailable
            ),
            Err(ScramError::ChannelBinding(_))
        ));
        let (server, _) =
            ScramServer::start(&verifier, b"n,,n=,r=abc", Binding::Unavailable).unwrap();
        assert!(matches!(
            server.finish(b"c=biws,r=wrong,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
    }
}
