//! A user's secret in the forms logins need: something to check clients
//! with (a SCRAM verifier, an md5 hash), and something to log in to the
//! nodes with.

use std::sync::OnceLock;

use crate::backend::ServerSecret;
use crate::protocol::md5::Md5Hash;
use crate::protocol::scram::{ScramSecret, ScramVerifier, SCRAM_PREFIX};

/// What pgsplit knows of one user's password.
pub struct Credentials {
    /// Checks clients' SCRAM proofs; `None` for a stored md5 hash, from
    /// which no verifier can be made.
    scram: Option<ScramVerifier>,
    /// Checks clients' md5 answers and answers nodes that ask for md5;
    /// `None` for a stored SCRAM verifier.
    md5: Option<Md5Hash>,
    /// The plain password, when the config has one.
    password: Option<String>,
    /// With only a verifier: the `ClientKey` a client's SCRAM proof
    /// revealed, which logs in to nodes that store the same verifier.
    learned_key: OnceLock<[u8; 32]>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// From `user`'s password, or a SCRAM verifier or md5 hash as
    /// `pg_authid` stores it. A password costs one key derivation (4096
    /// rounds), so this runs once per user and config, not per login.
    pub fn from_secret(user: &str, secret: &str) -> Result<Credentials, &'static str> {
        let (scram, md5, password) = if secret.starts_with(SCRAM_PREFIX) {
            (Some(ScramVerifier::parse(secret)?), None, None)
        } else if let Some(hash) = Md5Hash::parse(secret) {
            (None, Some(hash), None)
        } else {
            (
                Some(ScramVerifier::from_password(secret)),
                Some(Md5Hash::of_password(user, secret)),
                Some(secret.to_owned()),
            )
        };
        Ok(Credentials {
            scram,
            md5,
            password,
            learned_key: OnceLock::new(),
        })
    }

    /// What checks a client's SCRAM proof; `None` when only an md5 hash is
    /// stored (PostgreSQL then refuses SCRAM logins too).
    pub fn scram(&self) -> Option<&ScramVerifier> {
        self.scram.as_ref()
    }

    /// What checks a client's md5 answer; `None` when only a SCRAM
    /// verifier is stored (an md5 login then runs SCRAM, as in PostgreSQL).
    pub fn md5(&self) -> Option<&Md5Hash> {
        self.md5.as_ref()
    }

    /// How to log in to the nodes as this user: `None` while only a
    /// verifier is known and no client has proved the password yet.
    pub fn server_secret(&self) -> Option<ServerSecret> {
        if let Some(password) = &self.password {
            return Some(ServerSecret::Scram(ScramSecret::Password(password.clone())));
        }
        if let Some(hash) = &self.md5 {
            return Some(ServerSecret::Md5(hash.clone()));
        }
        let server_key = self.scram.as_ref()?.server_key();
        self.learned_key.get().map(|client_key| {
            ServerSecret::Scram(ScramSecret::Keys {
                client_key: *client_key,
                server_key,
            })
        })
    }

    /// Keeps the `ClientKey` from a successful client login; `true` when
    /// it is new, so pools waiting for it can be told.
    pub fn learn(&self, client_key: [u8; 32]) -> bool {
        self.password.is_none() && self.scram.is_some() && self.learned_key.set(client_key).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_logs_in_to_servers_only_after_a_client_proved_the_password() {
        let credentials = Credentials::from_secret(
            "u",
            "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .unwrap();
        assert!(credentials.md5().is_none());
        assert!(credentials.server_secret().is_none());
        assert!(credentials.learn([5; 32]));
        assert!(!credentials.learn([6; 32]), "learnt once");
        match credentials.server_secret() {
            Some(ServerSecret::Scram(ScramSecret::Keys {
                client_key,
                server_key,
            })) => {
                assert_eq!(client_key, [5; 32]);
                assert_eq!(server_key, [1; 32]);
            }
            _ => panic!("expected keys"),
        }
    }

    #[test]
    fn a_password_logs_in_directly_and_bad_verifiers_are_refused() {
        let credentials = Credentials::from_secret("u", "pw").unwrap();
        assert!(matches!(
            credentials.server_secret(),
            Some(ServerSecret::Scram(ScramSecret::Password(p))) if p == "pw"
        ));
        assert!(credentials.scram().is_some());
        assert_eq!(credentials.md5(), Some(&Md5Hash::of_password("u", "pw")));
        assert!(!credentials.learn([1; 32]));
        assert!(Credentials::from_secret("u", "SCRAM-SHA-256$nonsense").is_err());
    }

    #[test]
    fn an_md5_hash_checks_md5_logins_and_answers_servers_but_has_no_verifier() {
        let hash = Md5Hash::of_password("u", "pw");
        let credentials = Credentials::from_secret("u", &pg_authid_md5("u", "pw")).unwrap();
        assert!(credentials.scram().is_none());
        assert_eq!(credentials.md5(), Some(&hash));
        assert!(matches!(
            credentials.server_secret(),
            Some(ServerSecret::Md5(h)) if h == hash
        ));
        assert!(!credentials.learn([1; 32]), "md5 logins reveal no key");
    }

    /// `pg_authid.rolpassword` under `password_encryption = md5`.
    fn pg_authid_md5(user: &str, password: &str) -> String {
        use ::md5::{Digest, Md5};
        let digest = Md5::digest(format!("{password}{user}"));
        let digits: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("md5{digits}")
    }
}
