//! A user's secret in the forms logins need: a SCRAM verifier to check
//! clients, and something to log in to the nodes with.

use std::sync::OnceLock;

use crate::protocol::scram::{ScramSecret, ScramVerifier, SCRAM_PREFIX};

/// What pgsplit knows of one user's password.
pub struct Credentials {
    /// Checks clients' SCRAM proofs.
    pub scram: ScramVerifier,
    /// The plain password, when the config has one (md5 logins need it).
    pub password: Option<String>,
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
    /// From a password, or a verifier as `pg_authid` stores it. A password
    /// costs one key derivation (4096 rounds), so this runs once per
    /// user and config, not per login.
    pub fn from_secret(secret: &str) -> Result<Credentials, &'static str> {
        let (scram, password) = if secret.starts_with(SCRAM_PREFIX) {
            (ScramVerifier::parse(secret)?, None)
        } else {
            (
                ScramVerifier::from_password(secret),
                Some(secret.to_owned()),
            )
        };
        Ok(Credentials {
            scram,
            password,
            learned_key: OnceLock::new(),
        })
    }

    /// How to log in to the nodes as this user: `None` while only a
    /// verifier is known and no client has proved the password yet.
    pub fn server_secret(&self) -> Option<ScramSecret> {
        if let Some(password) = &self.password {
            return Some(ScramSecret::Password(password.clone()));
        }
        self.learned_key.get().map(|client_key| ScramSecret::Keys {
            client_key: *client_key,
            server_key: self.scram.server_key(),
        })
    }

    /// Keeps the `ClientKey` from a successful client login; `true` when
    /// it is new, so pools waiting for it can be told.
    pub fn learn(&self, client_key: [u8; 32]) -> bool {
        self.password.is_none() && self.learned_key.set(client_key).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_logs_in_to_servers_only_after_a_client_proved_the_password() {
        let credentials = Credentials::from_secret(
            "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .unwrap();
        assert!(credentials.password.is_none());
        assert!(credentials.server_secret().is_none());
        assert!(credentials.learn([5; 32]));
        assert!(!credentials.learn([6; 32]), "learnt once");
        match credentials.server_secret() {
            Some(ScramSecret::Keys {
                client_key,
                server_key,
            }) => {
                assert_eq!(client_key, [5; 32]);
                assert_eq!(server_key, [1; 32]);
            }
            _ => panic!("expected keys"),
        }
    }

    #[test]
    fn a_password_logs_in_directly_and_bad_verifiers_are_refused() {
        let credentials = Credentials::from_secret("pw").unwrap();
        assert!(matches!(
            credentials.server_secret(),
            Some(ScramSecret::Password(p)) if p == "pw"
        ));
        assert!(!credentials.learn([1; 32]));
        assert!(Credentials::from_secret("SCRAM-SHA-256$nonsense").is_err());
    }
}
