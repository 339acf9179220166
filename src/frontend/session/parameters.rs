//! The `pgsplit.*` session parameters, answered by pgsplit itself (the
//! servers never see them):
//! - `pgsplit.route`: `primary`, `replica` or `auto` for this session;
//! - `pgsplit.min_lsn`: a WAL position this session's reads must see, for
//!   causal consistency across sessions (a write in one, a read in another);
//! - `pgsplit.last_lsn` (read-only): where this session's last write
//!   transaction committed, to hand to another session.

use super::*;

/// The session setting that picks the route.
pub(super) const ROUTE: &str = "pgsplit.route";
/// The position reads must have replayed.
const MIN_LSN: &str = "pgsplit.min_lsn";
/// The client's last commit position.
const LAST_LSN: &str = "pgsplit.last_lsn";

/// Whether pgsplit answers for the parameter `name` itself.
pub(super) fn is_pgsplit_parameter(name: &str) -> bool {
    [ROUTE, MIN_LSN, LAST_LSN].contains(&name)
}

/// Reads a `pgsplit.route` value.
pub(super) fn parse_route(value: &str) -> Option<Route> {
    match value.trim().to_ascii_lowercase().as_str() {
        "primary" => Some(Route::Primary),
        "replica" => Some(Route::Replica),
        "auto" => Some(Route::Auto),
        _ => None,
    }
}

/// PostgreSQL's error for a bad parameter value.
pub(super) fn invalid_value(name: &str, value: &str, expected: &str) -> PgError {
    PgError::error(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\" ({expected})"),
    )
}

/// The error for a bad `pgsplit.route`.
pub(super) fn invalid_route(value: &str) -> PgError {
    invalid_value(ROUTE, value, "expected primary, replica or auto")
}

impl Session {
    /// `SET` or `RESET` of a `pgsplit.*` parameter.
    pub(super) fn set_pgsplit_parameter(&mut self, name: &str, effect: &SessionEffect) {
        let value = match effect {
            SessionEffect::Set { statement, .. } => {
                setting_value(statement).filter(|v| !v.eq_ignore_ascii_case("default"))
            }
            _ => None,
        };
        let outcome = match name {
            ROUTE => match value {
                None => {
                    self.route.route = self.default_route.route;
                    Ok(())
                }
                Some(ref value) => parse_route(value)
                    .map(|route| self.route.route = route)
                    .ok_or_else(|| invalid_route(value)),
            },
            MIN_LSN => match value {
                None => {
                    self.min_lsn = self.last_commit_lsn;
                    Ok(())
                }
                Some(ref value) => crate::lsn::parse(value)
                    .map(|lsn| self.min_lsn = self.min_lsn.max(Some(lsn)))
                    .ok_or_else(|| {
                        invalid_value(MIN_LSN, value, "expected a WAL position such as 0/16B3748")
                    }),
            },
            _ => Err(PgError::error(
                SqlState::CANT_CHANGE_RUNTIME_PARAM,
                format!("parameter \"{name}\" cannot be changed"),
            )),
        };
        match outcome {
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
        let value = match name {
            ROUTE => match self.route.route {
                Route::Auto => "auto".to_owned(),
                Route::Primary => "primary".to_owned(),
                Route::Replica => "replica".to_owned(),
            },
            MIN_LSN => lsn_text(self.min_lsn),
            _ => lsn_text(self.last_commit_lsn),
        };
        self.reply(messages::text_row_description(name));
        self.reply(messages::text_data_row(&value));
        self.reply(messages::command_complete("SHOW"));
        let status = self.client_status();
        self.reply(messages::ready_for_query(status));
    }
}
