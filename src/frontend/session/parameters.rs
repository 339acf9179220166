//! The `pgsplit.*` session parameters, answered by pgsplit itself (the
//! servers never see them). They can be set with `SET`, `RESET`, and at
//! login with `options=-c name=value` (PGOPTIONS), and read with `SHOW`:
//! - `pgsplit.route`: `primary`, `replica` or `auto` for this session;
//! - `pgsplit.consistency`: `eventual`, `sticky` or `read_your_writes`;
//! - `pgsplit.min_lsn`: a WAL position this session's reads must see, for
//!   causal consistency across sessions (a write in one, a read in another);
//! - `pgsplit.last_lsn` (read-only): where this session's last write
//!   transaction committed, to hand to another session.

use super::*;
use crate::config::Consistency;

const ROUTE: &str = "pgsplit.route";
const CONSISTENCY: &str = "pgsplit.consistency";
const MIN_LSN: &str = "pgsplit.min_lsn";
const LAST_LSN: &str = "pgsplit.last_lsn";

/// Whether pgsplit answers for the parameter `name` itself.
pub(super) fn is_pgsplit_parameter(name: &str) -> bool {
    [ROUTE, CONSISTENCY, MIN_LSN, LAST_LSN].contains(&name.to_ascii_lowercase().as_str())
}

/// PostgreSQL's error for a bad parameter value.
fn invalid_value(name: &str, value: &str, expected: &str) -> PgError {
    PgError::error(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\" ({expected})"),
    )
}

fn parse_route(value: &str) -> Option<Route> {
    match value.trim().to_ascii_lowercase().as_str() {
        "primary" => Some(Route::Primary),
        "replica" => Some(Route::Replica),
        "auto" => Some(Route::Auto),
        _ => None,
    }
}

fn parse_consistency(value: &str) -> Option<Consistency> {
    match value.trim().to_ascii_lowercase().as_str() {
        "eventual" => Some(Consistency::Eventual),
        "sticky" => Some(Consistency::Sticky),
        "read_your_writes" => Some(Consistency::ReadYourWrites),
        _ => None,
    }
}

impl Session {
    /// Sets `name` to `value`, or back to its default when `value` is `None`.
    pub(super) fn apply_pgsplit_parameter(
        &mut self,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), PgError> {
        let name = name.to_ascii_lowercase();
        match (name.as_str(), value) {
            (ROUTE, None) => self.route.route = self.default_route.route,
            (ROUTE, Some(value)) => {
                self.route.route = parse_route(value).ok_or_else(|| {
                    invalid_value(ROUTE, value, "expected primary, replica or auto")
                })?
            }
            (CONSISTENCY, None) => self.consistency = self.shared.router.settings().consistency,
            (CONSISTENCY, Some(value)) => {
                self.consistency = parse_consistency(value).ok_or_else(|| {
                    invalid_value(
                        CONSISTENCY,
                        value,
                        "expected eventual, sticky or read_your_writes",
                    )
                })?
            }
            (MIN_LSN, None) => self.min_lsn = self.last_commit_lsn,
            (MIN_LSN, Some(value)) => {
                let lsn = crate::lsn::parse(value).ok_or_else(|| {
                    invalid_value(MIN_LSN, value, "expected a WAL position such as 0/16B3748")
                })?;
                self.min_lsn = self.min_lsn.max(Some(lsn));
            }
            _ => {
                return Err(PgError::error(
                    SqlState::CANT_CHANGE_RUNTIME_PARAM,
                    format!("parameter \"{name}\" cannot be changed"),
                ))
            }
        }
        Ok(())
    }

    /// `SET` or `RESET` of a `pgsplit.*` parameter.
    pub(super) fn set_pgsplit_parameter(&mut self, name: &str, effect: &SessionEffect) {
        let value = match effect {
            SessionEffect::Set { statement, .. } => {
                setting_value(statement).filter(|v| !v.eq_ignore_ascii_case("default"))
            }
            _ => None,
        };
        match self.apply_pgsplit_parameter(name, value.as_deref()) {
            Ok(()) => {
                let tag = if value.is_some() { "SET" } else { "RESET" };
                self.reply(messages::command_complete(tag));
            }
            Err(error) => self.reply(error.to_message()),
        }
        let status = self.client_status();
        self.reply(messages::ready_for_query(status));
    }

    /// `SHOW` of a `pgsplit.*` parameter, answered as PostgreSQL answers `SHOW`.
    pub(super) fn show_pgsplit_parameter(&mut self, name: &str) {
        let lsn_text = |lsn: Option<u64>| crate::lsn::format(lsn.unwrap_or(0));
        let value = match name.to_ascii_lowercase().as_str() {
            ROUTE => match self.route.route {
                Route::Auto => "auto".to_owned(),
                Route::Primary => "primary".to_owned(),
                Route::Replica => "replica".to_owned(),
            },
            CONSISTENCY => match self.consistency {
                Consistency::Eventual => "eventual".to_owned(),
                Consistency::Sticky => "sticky".to_owned(),
                Consistency::ReadYourWrites => "read_your_writes".to_owned(),
            },
            MIN_LSN => lsn_text(self.min_lsn),
            _ => lsn_text(self.last_commit_lsn),
        };
        self.reply(messages::text_row_description(&[name]));
        self.reply(messages::text_data_row(&[Some(&value)]));
        self.reply(messages::command_complete("SHOW"));
        let status = self.client_status();
        self.reply(messages::ready_for_query(status));
    }
}
