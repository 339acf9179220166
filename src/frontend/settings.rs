//! The session settings a client expects to see on whichever server
//! connection serves it: its startup parameters plus its `SET`s.

use std::sync::{Arc, Mutex, Weak};

use crate::sql::{quote_literal, SessionEffect};
use crate::sync::lock;

/// Setting key → the statement that establishes it on a server connection.
pub use crate::backend::connection::AppliedSettings as Settings;

/// One client's settings, kept as replayable statements.
#[derive(Debug, Clone, Default)]
pub struct SessionSettings {
    startup: Settings,
    effective: Settings,
}

impl SessionSettings {
    /// Settings from the startup packet; these are also what `RESET` returns to.
    /// Clients that start alike share one map through `interner`.
    pub fn from_startup(
        parameters: &[(String, String)],
        interner: &SettingsInterner,
    ) -> SessionSettings {
        let startup = interner.intern(
            parameters
                .iter()
                .map(|(name, value)| {
                    let key = name.to_ascii_lowercase();
                    let statement =
                        format!("SET {} TO {}", quote_ident(&key), quote_literal(value));
                    (key, statement)
                })
                .collect(),
        );
        SessionSettings {
            effective: startup.clone(),
            startup,
        }
    }

    /// What a server connection must carry to serve this client.
    pub fn effective(&self) -> &Settings {
        &self.effective
    }

    /// Records a statement's effect once it has succeeded and committed.
    pub fn apply(&mut self, effect: &SessionEffect) {
        match effect {
            SessionEffect::Set { key, statement } => {
                Arc::make_mut(&mut self.effective).insert(key.clone(), statement.clone());
            }
            SessionEffect::Reset { key } => match self.startup.get(key) {
                Some(statement) => {
                    Arc::make_mut(&mut self.effective).insert(key.clone(), statement.clone());
                }
                None => {
                    Arc::make_mut(&mut self.effective).remove(key);
                }
            },
            SessionEffect::ResetAll | SessionEffect::DiscardAll => {
                self.effective = self.startup.clone()
            }
            _ => {}
        }
    }
}

/// How many distinct startup settings the interner remembers.
const INTERNED_SETTINGS: usize = 32;

/// Hands clients whose startup parameters are the same (an application's
/// pool of connections, pgbench's clients) one shared map. A server
/// connection records the map of the client it served, so the next client
/// with the same settings finds them in place by a pointer comparison
/// instead of comparing the maps entry by entry on every transaction.
/// Only a few recent maps are kept, weakly: it holds no memory for
/// clients that are gone.
#[derive(Debug, Default)]
pub struct SettingsInterner {
    recent: Mutex<Vec<Weak<std::collections::BTreeMap<String, String>>>>,
}

impl SettingsInterner {
    /// The shared map equal to `settings`, or `settings` itself, now shared.
    pub fn intern(&self, settings: std::collections::BTreeMap<String, String>) -> Settings {
        let mut recent = lock(&self.recent);
        recent.retain(|weak| weak.strong_count() > 0);
        if let Some(shared) = recent
            .iter()
            .filter_map(Weak::upgrade)
            .find(|shared| **shared == settings)
        {
            return shared;
        }
        let shared = Arc::new(settings);
        if recent.len() >= INTERNED_SETTINGS {
            recent.remove(0);
        }
        recent.push(Arc::downgrade(&shared));
        shared
    }
}

/// The SQL that brings a server connection from any state to `settings`:
/// back to the defaults first (role and session user included, which
/// `RESET ALL` leaves alone), then every setting in turn.
pub fn replay_sql(settings: &Settings) -> String {
    let mut sql = String::from("SET SESSION AUTHORIZATION DEFAULT; RESET ALL;");
    for statement in settings.values() {
        sql.push(' ');
        sql.push_str(statement);
        sql.push(';');
    }
    sql
}

fn quote_ident(name: &str) -> String {
    let plain = name.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_lowercase() || b == b'_' || (i > 0 && (b.is_ascii_digit() || b == b'.'))
    });
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_that_start_alike_share_one_map_and_others_do_not() {
        let interner = SettingsInterner::default();
        let startup = |name: &str| {
            SessionSettings::from_startup(&[("application_name".into(), name.into())], &interner)
        };
        let (a, b, other) = (startup("app"), startup("app"), startup("batch"));
        assert!(Arc::ptr_eq(a.effective(), b.effective()));
        assert!(!Arc::ptr_eq(a.effective(), other.effective()));
        // A client's SET gives it a map of its own; the shared one is unchanged.
        let mut changed = startup("app");
        changed.apply(&SessionEffect::Set {
            key: "work_mem".into(),
            statement: "SET work_mem = '8MB'".into(),
        });
        assert!(!Arc::ptr_eq(a.effective(), changed.effective()));
        assert!(!a.effective().contains_key("work_mem"));
        // Maps nobody holds any more are forgotten.
        drop((a, b, changed));
        let fresh = startup("app");
        assert_eq!(lock(&interner.recent).len(), 2);
        assert_eq!(
            fresh.effective()["application_name"],
            "SET application_name TO 'app'"
        );
    }

    #[test]
    fn startup_parameters_become_quoted_set_statements() {
        let s = SessionSettings::from_startup(
            &[
                ("DateStyle".into(), "ISO, MDY".into()),
                ("application_name".into(), "it's".into()),
            ],
            &SettingsInterner::default(),
        );
        assert_eq!(s.effective()["datestyle"], "SET datestyle TO 'ISO, MDY'");
        assert_eq!(
            s.effective()["application_name"],
            "SET application_name TO 'it''s'"
        );
    }

    #[test]
    fn reset_returns_to_the_startup_value() {
        let mut s = SessionSettings::from_startup(
            &[("search_path".into(), "a".into())],
            &SettingsInterner::default(),
        );
        let set = SessionEffect::Set {
            key: "search_path".into(),
            statement: "SET search_path = b".into(),
        };
        s.apply(&set);
        s.apply(&SessionEffect::Set {
            key: "work_mem".into(),
            statement: "SET work_mem = '8MB'".into(),
        });
        assert_eq!(s.effective()["search_path"], "SET search_path = b");
        s.apply(&SessionEffect::Reset {
            key: "search_path".into(),
        });
        assert_eq!(s.effective()["search_path"], "SET search_path TO 'a'");
        s.apply(&SessionEffect::ResetAll);
        assert!(!s.effective().contains_key("work_mem"));
        assert_eq!(
            replay_sql(s.effective()),
            "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; SET search_path TO 'a';"
        );
    }
}
