//! The admin console: connecting to the virtual database `pgsplit` (as the
//! `monitor` user or one listed in `admin.users`) gives a session that
//! answers `SHOW NODES`, `SHOW POOLS`, `SHOW CLIENTS`, `SHOW SERVERS`,
//! `SHOW STATS`, `SHOW CONFIG`, `PAUSE`, `RESUME`, `RELOAD`, `SWITCHOVER <node>`,
//! `PROMOTE [<node>]` and `REJOIN <node>` with ordinary result sets, as
//! PgBouncer's console does. Only the simple query protocol is spoken.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::frontend::login::Authenticated;
use crate::metrics::ROLES;
use crate::monitor::Request;
use crate::protocol::frame;
use crate::protocol::messages;
use crate::protocol::{PgError, SqlState};
use crate::proxy::Shared;

/// The virtual database that opens the console.
pub const ADMIN_DATABASE: &str = "pgsplit";

/// Console input is commands, never data.
const MAX_COMMAND: usize = 64 * 1024;

/// What a command answers.
enum Answer {
    Rows {
        columns: Vec<&'static str>,
        rows: Vec<Vec<Option<String>>>,
    },
    Done {
        tag: &'static str,
        notice: Option<String>,
    },
}

/// Serves one console session until the client leaves.
pub async fn run(shared: Arc<Shared>, login: Authenticated) {
    let mut stream = login.stream;
    let mut input = login.buffered;
    let mut out = BytesMut::new();
    for (name, value) in [
        ("server_version", "15.0 (pgsplit admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        out.extend_from_slice(&messages::parameter_status(name, value));
    }
    out.extend_from_slice(&messages::backend_key_data(0, 0));
    out.extend_from_slice(&messages::ready_for_query(b'I'));
    tracing::info!(user = %login.request.user, "admin console session");
    loop {
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let frame = match frame::decode(&mut input, MAX_COMMAND) {
            Ok(Some(frame)) => frame,
            Ok(None) => match stream.read_buf(&mut input).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(error) => {
                let error = PgError::fatal(SqlState::PROTOCOL_VIOLATION, error.to_string());
                let _ = stream.write_all(&error.to_message()).await;
                return;
            }
        };
        match frame.tag() {
            b'Q' => {
                let body = frame.body();
                let text = String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body));
                for command in text.split(';').map(str::trim).filter(|c| !c.is_empty()) {
                    match execute(&shared, command).await {
                        Ok(answer) => write_answer(&mut out, answer),
                        Err(error) => {
                            out.extend_from_slice(&error.to_message());
                            break;
                        }
                    }
                }
                out.extend_from_slice(&messages::ready_for_query(b'I'));
            }
            b'X' => return,
            b'S' => out.extend_from_slice(&messages::ready_for_query(b'I')),
            b'P' => {
                let error = PgError::error(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "the pgsplit admin console supports only simple queries",
                );
                out.extend_from_slice(&error.to_message());
            }
            _ => {}
        }
    }
}

fn write_answer(out: &mut BytesMut, answer: Answer) {
    match answer {
        Answer::Rows { columns, rows } => {
            out.extend_from_slice(&messages::text_row_description(&columns));
            for row in &rows {
                let values: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
                out.extend_from_slice(&messages::text_data_row(&values));
            }
            out.extend_from_slice(&messages::command_complete("SHOW"));
        }
        Answer::Done { tag, notice } => {
            if let Some(notice) = notice {
                out.extend_from_slice(&notice_message(&notice));
            }
            out.extend_from_slice(&messages::command_complete(tag));
        }
    }
}

/// A `NoticeResponse` carrying what an action did.
fn notice_message(text: &str) -> Bytes {
    let mut message = messages::error_response("NOTICE", "00000", text).to_vec();
    message[0] = b'N';
    Bytes::from(message)
}

/// Runs one console command.
async fn execute(shared: &Shared, command: &str) -> Result<Answer, PgError> {
    let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let argument = |i: usize| {
        words
            .get(i)
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_owned())
    };
    let act = |request| async move {
        shared
            .monitor
            .ask(request)
            .await
            .map(|result| Answer::Done {
                tag: "OK",
                notice: Some(result),
            })
            .map_err(|error| PgError::error(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, error))
    };
    match upper.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["SHOW", "NODES"] => Ok(show_nodes(shared)),
        ["SHOW", "POOLS"] => Ok(show_pools(shared)),
        ["SHOW", "CLIENTS"] => Ok(show_clients(shared)),
        ["SHOW", "SERVERS"] => Ok(show_servers(shared)),
        ["SHOW", "STATS"] => Ok(show_stats(shared)),
        ["SHOW", "CONFIG"] => Ok(show_config(shared)),
        ["PAUSE"] => {
            shared.set_paused(true);
            Ok(Answer::Done { tag: "PAUSE", notice: None })
        }
        ["RELOAD"] => crate::reload::reload(shared)
            .await
            .map(|result| Answer::Done {
                tag: "RELOAD",
                notice: Some(result),
            })
            .map_err(|error| PgError::error(SqlState::INVALID_PARAMETER_VALUE, error)),
        ["RESUME"] => {
            shared.set_paused(false);
            Ok(Answer::Done { tag: "RESUME", notice: None })
        }
        ["SWITCHOVER", _] | ["SWITCHOVER", "TO", _] => {
            let target = argument(words.len() - 1).unwrap_or_default();
            act(Request::Switchover { target }).await
        }
        ["PROMOTE"] => act(Request::Promote { target: None }).await,
        ["PROMOTE", _] => act(Request::Promote { target: argument(1) }).await,
        ["REJOIN", _] => act(Request::Rejoin { node: argument(1).unwrap_or_default() }).await,
        _ => Err(PgError::error(
            SqlState::SYNTAX_ERROR,
            format!(
                "unknown admin console command \"{command}\" (SHOW NODES|POOLS|CLIENTS|SERVERS|STATS|CONFIG, PAUSE, RESUME, RELOAD, SWITCHOVER <node>, PROMOTE [<node>], REJOIN <node>)"
            ),
        )),
    }
}

fn text(value: impl ToString) -> Option<String> {
    Some(value.to_string())
}

fn show_nodes(shared: &Shared) -> Answer {
    let topology = shared.topology.load_full();
    let config = shared.config();
    let rows = topology
        .nodes
        .iter()
        .zip(&config.nodes)
        .filter(|(_, node)| !node.removed)
        .map(|(status, node)| {
            vec![
                text(&node.name),
                text(status.role.as_str()),
                text(status.state.as_str()),
                text(&node.host),
                text(node.port),
                status.wal_lsn.map(crate::lsn::format),
                status.replay_lsn.map(crate::lsn::format),
                status.lag_bytes.map(|l| l.to_string()),
                status.lag_seconds.map(|l| format!("{l:.3}")),
                status
                    .check_latency
                    .map(|d| format!("{:.2}", d.as_secs_f64() * 1000.0)),
                status.last_error.clone(),
            ]
        })
        .collect();
    Answer::Rows {
        columns: vec![
            "node",
            "role",
            "state",
            "host",
            "port",
            "wal_lsn",
            "replay_lsn",
            "lag_bytes",
            "lag_seconds",
            "latency_ms",
            "last_error",
        ],
        rows,
    }
}

fn show_pools(shared: &Shared) -> Answer {
    let rows = shared
        .pools
        .all()
        .into_iter()
        .map(|(key, pool)| {
            let stats = pool.stats();
            vec![
                text(pool.node_name()),
                text(&key.database),
                text(&key.user),
                text(stats.size),
                text(stats.active),
                text(stats.idle),
                text(stats.waiting),
            ]
        })
        .collect();
    Answer::Rows {
        columns: vec![
            "node", "database", "user", "size", "active", "idle", "waiting",
        ],
        rows,
    }
}

fn show_clients(shared: &Shared) -> Answer {
    let rows = shared
        .clients
        .list()
        .iter()
        .map(|client| {
            let config = shared.config();
            let node = client
                .node()
                .and_then(|n| config.nodes.get(n))
                .map(|n| n.name.clone());
            vec![
                text(client.id),
                text(&client.user),
                text(&client.database),
                text(&client.application_name),
                text(client.peer),
                text(client.state().as_str()),
                node,
            ]
        })
        .collect();
    Answer::Rows {
        columns: vec![
            "id",
            "user",
            "database",
            "application_name",
            "peer",
            "state",
            "node",
        ],
        rows,
    }
}

fn show_servers(shared: &Shared) -> Answer {
    let topology = shared.topology.load_full();
    let mut rows = Vec::new();
    for (key, pool) in shared.pools.all() {
        let stats = pool.stats();
        let Some(status) = topology.nodes.get(key.node) else {
            continue;
        };
        let role = status.role.as_str();
        for (state, count) in [("active", stats.active), ("idle", stats.idle)] {
            rows.push(vec![
                text(pool.node_name()),
                text(role),
                text(&key.database),
                text(&key.user),
                text(state),
                text(count),
            ]);
        }
    }
    Answer::Rows {
        columns: vec!["node", "role", "database", "user", "state", "connections"],
        rows,
    }
}

fn show_stats(shared: &Shared) -> Answer {
    let mut rows = Vec::new();
    let config = shared.config();
    for (index, node) in config.nodes.iter().enumerate().filter(|(_, n)| !n.removed) {
        let Some(counters) = shared.metrics.node(index) else {
            continue;
        };
        for (at, role) in ROLES.iter().map(|r| r.as_str()).enumerate() {
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            let [reads, writes] = &counters.queries[at];
            let transactions = load(&counters.transactions[at]);
            if load(reads) + load(writes) + transactions == 0 {
                continue;
            }
            rows.push(vec![
                text(&node.name),
                text(role),
                text(load(reads)),
                text(load(writes)),
                text(transactions),
            ]);
        }
    }
    Answer::Rows {
        columns: vec!["node", "role", "reads", "writes", "transactions"],
        rows,
    }
}

fn show_config(shared: &Shared) -> Answer {
    let mut rows = Vec::new();
    flatten("", &shared.config().redacted(), &mut rows);
    Answer::Rows {
        columns: vec!["key", "value"],
        rows: rows
            .into_iter()
            .map(|(k, v)| vec![Some(k), Some(v)])
            .collect(),
    }
}

/// `a.b[0].c = value` lines from a JSON tree.
fn flatten(prefix: &str, value: &serde_json::Value, rows: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, field) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, field, rows);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, rows);
            }
        }
        serde_json::Value::String(s) => rows.push((prefix.to_owned(), s.clone())),
        other => rows.push((prefix.to_owned(), other.to_string())),
    }
}
