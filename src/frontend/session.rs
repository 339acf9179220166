//! One client's session after login: the state machine that takes a server
//! connection for each transaction (or for the whole session), forwards
//! framed messages both ways, and keeps prepared statements and settings
//! working although consecutive transactions may use different servers.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::cancel::{self, CancelKey, CancelTarget};
use super::login::Authenticated;
use super::responses::{Expected, PreparedOnServer, ResponseQueue};
use super::settings::{replay_sql, SessionSettings};
use super::statements::{ClientStatements, PreparedStatement};
use super::stream::ClientStream;
use super::unit::{self, Lookahead, UnitTraits};
use crate::backend::connection::LoginTarget;
use crate::backend::{CheckoutError, ConnectError, Pool, PoolKey, PooledConnection};
use crate::config::PoolMode;
use crate::config::Route;
use crate::protocol::frame::{self, Frame};
use crate::protocol::messages::{self, error_fields};
use crate::protocol::{PgError, SqlState};
use crate::proxy::Shared;
use crate::router::classify::Classification;
use crate::router::{InFlight, Need, SessionRoute};
use crate::sql::lexer::split_statements;
use crate::sql::session::setting_value;
use crate::sql::{quote_literal, session_effect, SessionEffect};

/// Why a server connection could not take on the client's settings.
enum SyncError {
    Refused(Frame),
    Lost(io::Error),
}

impl SyncError {
    /// The error for the client, with the severity the situation calls for.
    fn to_message(&self, severity: &str) -> Bytes {
        match self {
            SyncError::Refused(frame) => {
                let fields = error_fields(frame.body());
                let text =
                    |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or_default()).into_owned();
                messages::error_response(severity, &text(fields.code), &text(fields.message))
            }
            SyncError::Lost(error) => messages::error_response(
                severity,
                SqlState::CONNECTION_FAILURE,
                &format!("server connection lost while restoring session settings: {error}"),
            ),
        }
    }
}

/// The session setting that picks the route, handled by pgsplit.
const ROUTE_SETTING: &str = "pgsplit.route";

/// Reads a `pgsplit.route` value.
fn parse_route(value: &str) -> Option<Route> {
    match value.trim().to_ascii_lowercase().as_str() {
        "primary" => Some(Route::Primary),
        "replica" => Some(Route::Replica),
        "auto" => Some(Route::Auto),
        _ => None,
    }
}

fn invalid_route(value: &str) -> PgError {
    PgError::error(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{ROUTE_SETTING}\": \"{value}\" (expected primary, replica or auto)"),
    )
}

/// Message types a client may send after login.
const FRONTEND_TAGS: &[u8] = b"QPBDECSHdcfFX";

/// Why a session ends.
enum End {
    /// The client said goodbye or went away.
    Closed,
    /// pgsplit ends the session with this error.
    Fatal(PgError),
}

/// The state of one client session.
pub struct Session {
    shared: Arc<Shared>,
    client: ClientStream,
    client_in: BytesMut,
    client_out: BytesMut,
    /// One pool per node for this client's database and user.
    pools: Vec<Arc<Pool>>,
    server: Option<PooledConnection>,
    server_out: BytesMut,
    expected: ResponseQueue,
    settings: SessionSettings,
    statements: ClientStatements,
    /// Session effect of the statement behind the unnamed `Parse`.
    unnamed_effect: SessionEffect,
    /// Session effect of the statement behind the last `Bind`.
    bound_effect: SessionEffect,
    /// Effects of statements sent but not yet completed, in order.
    effects_in_flight: VecDeque<SessionEffect>,
    /// Effects of completed statements, applied when their transaction commits.
    effects_done: Vec<SessionEffect>,
    /// An error happened in the current transaction (explicit or implicit).
    transaction_failed: bool,
    transaction_status: u8,
    /// Why the client is tied to its server connection for good, if it is.
    pinned: Option<&'static str>,
    /// After an error pgsplit raised in an extended-protocol batch, client
    /// messages are ignored up to `Sync`, as PostgreSQL does.
    skip_until_sync: bool,
    /// A FATAL error the server sent before closing, reported as the cause.
    server_fatal: Option<PgError>,
    /// A transaction or pinned state lost with its server, reported on the
    /// client's next request.
    lost_state: Option<PgError>,
    cancel_key: CancelKey,
    /// The database the client connected to (function volatility is per database).
    database: String,
    /// Where this session's transactions go (rules, `SET pgsplit.route`).
    route: SessionRoute,
    /// The route from the config rules, which `RESET pgsplit.route` restores.
    default_route: SessionRoute,
    /// The planned unit that is about to start, once it has been looked at.
    unit: Option<UnitTraits>,
    /// The current transaction changed data.
    transaction_wrote: bool,
    /// When the client's last writing transaction ended.
    last_write: Option<Instant>,
    /// Counts the attached connection's node as busy, for load balancing.
    in_flight: Option<InFlight>,
    /// A plain `BEGIN` answered by pgsplit and not yet sent anywhere: the
    /// next statement decides whether the transaction is read-only
    /// (`SET TRANSACTION READ ONLY`) and may use a replica.
    deferred_begin: Option<Frame>,
    /// In COPY FROM STDIN until the client's `CopyDone`/`CopyFail`: the
    /// server ignores `Sync` meanwhile, so none is expected to answer.
    copy_in: bool,
    /// Classification of the statement behind the unnamed `Parse`.
    unnamed_class: Option<Arc<Classification>>,
    shutting_down: bool,
    finished: bool,
}

/// Reads more server bytes if a server connection is attached; otherwise
/// never completes, so it can sit in a `select!`.
async fn fill(server: &mut Option<PooledConnection>) -> io::Result<()> {
    match server {
        Some(server) => server.fill().await,
        None => std::future::pending().await,
    }
}

/// The server's error, reshaped as pgsplit's own: a FATAL that ended a
/// server connection is only an ERROR for the client, whose session lives on.
fn relayed_error(frame: &Frame) -> PgError {
    let fields = error_fields(frame.body());
    let code = match fields.code {
        Some(b"57P01") => SqlState::ADMIN_SHUTDOWN,
        Some(b"57P03") => SqlState::CANNOT_CONNECT_NOW,
        _ => SqlState::CONNECTION_FAILURE,
    };
    let message = fields
        .message
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    PgError::error(code, format!("server connection lost: {message}"))
}

fn completion_tag(effect: &SessionEffect) -> Option<&'static [u8]> {
    match effect {
        SessionEffect::Set { .. } | SessionEffect::SetTransient => Some(b"SET"),
        SessionEffect::Reset { .. } | SessionEffect::ResetAll => Some(b"RESET"),
        SessionEffect::DiscardAll => Some(b"DISCARD ALL"),
        SessionEffect::Deallocate(Some(_)) => Some(b"DEALLOCATE"),
        SessionEffect::Deallocate(None) => Some(b"DEALLOCATE ALL"),
        SessionEffect::None | SessionEffect::Pin(_) => None,
    }
}

impl Session {
    /// Finishes the login (server parameters, backend key) and runs the
    /// session until the client leaves.
    pub async fn run(shared: Arc<Shared>, login: Authenticated, shutdown: watch::Receiver<bool>) {
        let request = login.request;
        let password = shared
            .credentials(&request.user)
            .map(|c| c.password.clone())
            .unwrap_or_default();
        let pools = shared
            .config
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let key = PoolKey {
                    node: index,
                    database: request.database.clone(),
                    user: request.user.clone(),
                };
                shared.pools.get_or_create(key, || LoginTarget {
                    node_name: node.name.clone(),
                    host: node.host.clone(),
                    port: node.port,
                    database: request.database.clone(),
                    user: request.user.clone(),
                    password: password.clone(),
                })
            })
            .collect();
        let cancel_key = shared.cancels.register();
        let application_name = request
            .parameters
            .iter()
            .find(|(name, _)| name == "application_name")
            .map(|(_, value)| value.as_str());
        let mut route = shared.router.session_route(&request.user, application_name);
        let default_route = route.clone();
        // `options=-c pgsplit.route=primary` (PGOPTIONS) picks the route at
        // login; like `SET pgsplit.route`, the servers never see it.
        let (route_setting, server_parameters): (Vec<_>, Vec<_>) = request
            .parameters
            .iter()
            .cloned()
            .partition(|(name, _)| name.eq_ignore_ascii_case(ROUTE_SETTING));
        let mut bad_route = None;
        if let Some((_, value)) = route_setting.last() {
            match parse_route(value) {
                Some(parsed) => route.route = parsed,
                None => bad_route = Some(invalid_route(value)),
            }
        }
        let mut session = Session {
            settings: SessionSettings::from_startup(&server_parameters),
            client: login.stream,
            client_in: login.buffered,
            client_out: BytesMut::with_capacity(16 * 1024),
            pools,
            server: None,
            server_out: BytesMut::with_capacity(4096),
            expected: ResponseQueue::default(),
            statements: ClientStatements::default(),
            unnamed_effect: SessionEffect::None,
            bound_effect: SessionEffect::None,
            effects_in_flight: VecDeque::new(),
            effects_done: Vec::new(),
            transaction_failed: false,
            transaction_status: b'I',
            pinned: None,
            skip_until_sync: false,
            server_fatal: None,
            lost_state: None,
            cancel_key,
            database: request.database.clone(),
            default_route,
            route,
            unit: None,
            transaction_wrote: false,
            last_write: None,
            in_flight: None,
            deferred_begin: None,
            copy_in: false,
            unnamed_class: None,
            shutting_down: false,
            finished: false,
            shared,
        };
        tracing::debug!(user = %request.user, database = %request.database, "client logged in");
        if let Some(error) = bad_route {
            let _ = session
                .client
                .write_all(&PgError::fatal(error.code, error.message).to_message())
                .await;
            return;
        }
        match session.greet().await {
            Ok(()) => session.serve(shutdown).await,
            Err(error) => {
                let _ = session.client.write_all(&error).await;
            }
        }
        session.close().await;
    }

    fn pool_mode(&self) -> PoolMode {
        self.shared.config.pool.mode
    }

    /// Sends what a server sends after authentication. The first server
    /// connection is taken now so that an unknown database or an invalid
    /// startup setting fails the login, as it would on PostgreSQL.
    async fn greet(&mut self) -> Result<(), Bytes> {
        let primary = self.shared.router.primary();
        let mut server = self.checkout(primary).await.map_err(|error| match error {
            CheckoutError::Connect(ConnectError::Refused { error, .. }) => error.bytes().clone(),
            CheckoutError::Timeout(_) => {
                PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, format!("pgsplit: {error}"))
                    .to_message()
            }
            CheckoutError::Connect(other) => {
                PgError::fatal(SqlState::CONNECTION_FAILURE, other.to_string()).to_message()
            }
        })?;
        if let Err(error) = self.sync_settings(&mut server).await {
            return Err(error.to_message("FATAL"));
        }
        let mut parameters: Vec<_> = server.parameters.iter().collect();
        parameters.sort();
        for (name, value) in parameters {
            self.client_out
                .extend_from_slice(&messages::parameter_status(name, value));
        }
        self.client_out
            .extend_from_slice(&messages::backend_key_data(
                self.cancel_key.process_id,
                self.cancel_key.secret_key,
            ));
        self.client_out
            .extend_from_slice(&messages::ready_for_query(b'I'));
        if self.pool_mode() == PoolMode::Session {
            self.attach(server, primary);
        } else {
            server.release();
        }
        Ok(())
    }

    /// Takes a server connection from `node`'s pool.
    async fn checkout(&self, node: usize) -> Result<PooledConnection, CheckoutError> {
        self.pools[node]
            .checkout(self.shared.config.query_wait_timeout)
            .await
    }

    /// Brings a server connection's settings in line with this client's.
    /// A setting the server refuses comes back as the server's error.
    async fn sync_settings(&self, server: &mut PooledConnection) -> Result<(), SyncError> {
        let wanted = self.settings.effective();
        if server.applied_settings.as_ref() == Some(wanted) {
            return Ok(());
        }
        match server.run_silently(&replay_sql(wanted)).await {
            Ok(None) => {
                server.applied_settings = Some(wanted.clone());
                Ok(())
            }
            Ok(Some(error)) => {
                server.applied_settings = None;
                Err(SyncError::Refused(error))
            }
            Err(error) => Err(SyncError::Lost(error)),
        }
    }

    fn attach(&mut self, server: PooledConnection, node: usize) {
        self.in_flight = Some(self.shared.router.start_transaction(node));
        cancel::publish(
            &self.cancel_key.slot,
            Some(CancelTarget {
                address: server.address.clone(),
                process_id: server.process_id,
                secret_key: server.secret_key,
            }),
        );
        self.server = Some(server);
    }

    fn detach(&mut self) -> Option<PooledConnection> {
        cancel::publish(&self.cancel_key.slot, None);
        self.in_flight = None;
        self.server.take()
    }

    /// The main loop: flush what is due, then wait for the client, the
    /// server or shutdown.
    async fn serve(&mut self, mut shutdown: watch::Receiver<bool>) {
        // One long-lived future: creating one per loop turn costs a lock.
        self.shutting_down = *shutdown.borrow_and_update();
        let stop = shutdown.changed();
        tokio::pin!(stop);
        // Messages may have arrived together with the last login message.
        if !self.client_in.is_empty() {
            self.handle_client_input().await;
        }
        loop {
            if let Err(error) = self.flush().await {
                tracing::debug!(%error, "client connection lost");
                return;
            }
            if self.finished {
                return;
            }
            tokio::select! {
                read = self.client.read_buf(&mut self.client_in) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => self.handle_client_input().await,
                },
                filled = fill(&mut self.server) => match filled {
                    Ok(()) => self.process_server_input(),
                    Err(error) => self.on_server_lost(error),
                },
                _ = &mut stop, if !self.shutting_down => {
                    self.shutting_down = true;
                    self.finish_if_idle_during_shutdown();
                }
            }
        }
    }

    /// Processes buffered client messages; a fatal problem ends the session.
    async fn handle_client_input(&mut self) {
        match self.process_client_input().await {
            Ok(()) => {}
            Err(End::Closed) => self.finished = true,
            Err(End::Fatal(error)) => {
                tracing::info!(%error, "closing client session");
                self.client_out.extend_from_slice(&error.to_message());
                self.finished = true;
            }
        }
    }

    fn finish_if_idle_during_shutdown(&mut self) {
        if self.shutting_down && self.server.is_none() && self.expected.is_empty() {
            let error = PgError::fatal(
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            );
            self.client_out.extend_from_slice(&error.to_message());
            self.finished = true;
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.server_out.is_empty() {
            if let Some(server) = self.server.as_mut() {
                if let Err(error) = server.write_all(&self.server_out).await {
                    self.server_out.clear();
                    self.on_server_lost(error);
                }
            }
            self.server_out.clear();
        }
        if !self.client_out.is_empty() {
            self.client.write_all(&self.client_out).await?;
            self.client_out.clear();
        }
        Ok(())
    }

    async fn process_client_input(&mut self) -> Result<(), End> {
        let limit = self.shared.config.max_message_size;
        loop {
            if !self.plan_unit() {
                break;
            }
            let frame = frame::decode(&mut self.client_in, limit).map_err(|e| {
                End::Fatal(PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))
            })?;
            let Some(frame) = frame else {
                break;
            };
            self.on_client_message(frame).await?;
            if self.finished {
                break;
            }
        }
        self.release_due_synthetic();
        Ok(())
    }

    fn release_due_synthetic(&mut self) {
        let out = &mut self.client_out;
        self.expected
            .take_due_synthetic(|bytes| out.extend_from_slice(&bytes));
    }

    /// Queues a reply pgsplit makes itself, after everything still owed.
    fn reply(&mut self, message: Bytes) {
        if self.expected.is_empty() {
            self.client_out.extend_from_slice(&message);
        } else {
            self.expected.push(Expected::Synthetic(message));
        }
    }

    /// Reports an error for a request pgsplit could not pass on: after a
    /// simple query the client is ready again; in an extended-protocol batch
    /// the rest of the batch is skipped up to `Sync`.
    ///
    /// With a server connection attached mid-batch or mid-transaction, the
    /// server itself must fail too, or it would commit what PostgreSQL rolls
    /// back: pgsplit has it raise the same error, which then reaches the
    /// client in its place.
    fn reject(&mut self, error: PgError, tag: u8) {
        if self.server.is_some() && !matches!(tag, b'Q' | b'F') {
            self.fail_on_server(&error);
        } else {
            self.reply(error.to_message());
        }
        self.reject_tail(tag);
    }

    /// Makes the attached server raise `error` with an anonymous `DO` block
    /// (unnamed statement and portal), swallowing its `ParseComplete` and
    /// `BindComplete`; the error itself is relayed like any other.
    fn fail_on_server(&mut self, error: &PgError) {
        let sql = format!(
            "DO $pgsplit$ BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = {}; END $pgsplit$",
            error.code,
            quote_literal(&error.message)
        );
        self.server_out
            .extend_from_slice(&messages::parse_renamed("", &messages::parse_rest(&sql)));
        self.server_out
            .extend_from_slice(&messages::bind_renamed(b"", "", &[0, 0, 0, 0, 0, 0]));
        self.server_out
            .extend_from_slice(&messages::execute_unnamed());
        for reply in [b'1', b'2'] {
            self.expected.push(Expected::Injected {
                reply,
                prepared: None,
            });
        }
        self.expected.push(Expected::reply_to(b'E'));
    }

    /// What follows a rejection: `ReadyForQuery` or skipping to `Sync`.
    fn reject_tail(&mut self, tag: u8) {
        if matches!(tag, b'Q' | b'F') {
            let status = self.client_status();
            self.reply(messages::ready_for_query(status));
        } else {
            self.skip_until_sync = true;
        }
    }

    fn forward(&mut self, frame: &Frame) {
        self.server_out.extend_from_slice(frame.bytes());
    }

    fn pin(&mut self, reason: &'static str) {
        if self.pinned.is_none() && self.pool_mode() == PoolMode::Transaction {
            tracing::info!(
                reason,
                "client pinned to its server connection for the rest of its session"
            );
        }
        self.pinned = Some(reason);
    }

    /// Makes sure a server connection is attached; `false` means it could
    /// not be, and the client has been told why.
    async fn ensure_server(&mut self, tag: u8) -> bool {
        if self.server.is_some() {
            return true;
        }
        if let Some(error) = self.lost_state.take() {
            self.reject(error, tag);
            return false;
        }
        let unit = self.unit.take();
        if unit.is_some_and(|unit| unit.unparsed) {
            let counters = &self.shared.router.counters;
            counters
                .unparsed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!("statement could not be classified; sent to the primary");
        }
        if let Some(unit) = unit {
            // The plan already looked at this unit's statements.
            self.transaction_wrote |= unit.wrote();
        }
        let need = match (unit, self.deferred_begin.is_some()) {
            (Some(unit), true) if unit.sets_transaction_read_only && !unit.wrote() => Need::Read,
            (Some(unit), false) => {
                unit.need(&self.route, self.read_only_session(), self.recently_wrote())
            }
            _ => Need::Primary,
        };
        let router = self.shared.router.clone();
        let mut failed = Vec::new();
        let (mut server, node) = loop {
            let Some(node) = router.choose(need, &self.route, &failed) else {
                let error = PgError::error(
                    SqlState::CONNECTION_FAILURE,
                    "pgsplit: no replica can serve this read and routing.primary_reads is never",
                );
                self.reject(error, tag);
                return false;
            };
            match self.checkout(node).await {
                Ok(server) => break (server, node),
                Err(error) if node != router.primary() => {
                    // Nothing was sent yet: the read can go elsewhere.
                    tracing::warn!(%error, node = router.node_name(node), "replica unavailable, routing the read elsewhere");
                    router.node_failed(node);
                    failed.push(node);
                }
                Err(error) => {
                    tracing::warn!(%error, "no server connection for client");
                    let code = match error {
                        CheckoutError::Timeout(_) => SqlState::TOO_MANY_CONNECTIONS,
                        CheckoutError::Connect(_) => SqlState::CONNECTION_FAILURE,
                    };
                    self.reject(PgError::error(code, format!("pgsplit: {error}")), tag);
                    return false;
                }
            }
        };
        if let Err(error) = self.sync_settings(&mut server).await {
            tracing::warn!("could not restore session settings on a server connection");
            self.reply(error.to_message("ERROR"));
            self.reject_tail(tag);
            return false;
        }
        if let Err(error) = self.trim_prepared(&mut server).await {
            tracing::warn!(%error, "server connection lost while closing prepared statements");
            self.reject(
                PgError::error(
                    SqlState::CONNECTION_FAILURE,
                    format!("server connection lost: {error}"),
                ),
                tag,
            );
            return false;
        }
        self.attach(server, node);
        if let Some(begin) = self.deferred_begin.take() {
            // The client already saw BEGIN succeed: send it first, quietly.
            self.forward(&begin);
            for reply in [b'C', b'Z'] {
                self.expected.push(Expected::Injected {
                    reply,
                    prepared: None,
                });
            }
        }
        true
    }

    /// Keeps a connection under `pool.max_prepared_statements` by closing
    /// its least recently used statements (down to 90% of the limit, so
    /// this round trip is rare). Runs on an idle connection, before the
    /// unit's messages, so nothing in flight can refer to them.
    async fn trim_prepared(&self, server: &mut PooledConnection) -> io::Result<()> {
        let limit = self.shared.config.pool.max_prepared_statements;
        if server.prepared.len() <= limit {
            return Ok(());
        }
        let keep = limit - limit / 10;
        let excess = server.prepared.len() - keep;
        let victims = server.prepared.take_least_recent(excess);
        server.close_statements(&victims).await
    }

    /// The transaction status the client believes in.
    fn client_status(&self) -> u8 {
        if self.server.is_some() || self.deferred_begin.is_some() {
            self.transaction_status
        } else {
            b'I'
        }
    }

    /// Answers a lone read-write `BEGIN` without a server, when the session
    /// might still turn out read-only; `true` if it did.
    fn defer_begin(&mut self, frame: &Frame, statements: usize) -> bool {
        let deferrable = self.server.is_none()
            && self.deferred_begin.is_none()
            && statements == 1
            && self.route.route != Route::Primary
            && self
                .unit
                .is_some_and(|unit| unit.begins_read_write && !unit.wrote() && unit.hint.is_none());
        if !deferrable || self.read_only_session() {
            return false;
        }
        self.unit = None;
        self.deferred_begin = Some(frame.clone());
        self.transaction_status = b'T';
        self.reply(messages::command_complete("BEGIN"));
        self.reply(messages::ready_for_query(b'T'));
        true
    }

    /// Whether the session's transactions are read-only by default
    /// (`default_transaction_read_only`), so `BEGIN` may use a replica.
    fn read_only_session(&self) -> bool {
        self.settings
            .effective()
            .get("default_transaction_read_only")
            .is_some_and(|statement| crate::sql::session::sets_boolean_on(statement))
    }

    /// Whether the client's last write is recent enough to read it back
    /// from the primary only.
    fn recently_wrote(&self) -> bool {
        unit::within_sticky_window(self.shared.router.settings(), self.last_write)
    }

    /// Looks at the unit about to start, once, before a node is chosen.
    /// `false` means its end has not arrived yet.
    fn plan_unit(&mut self) -> bool {
        if self.server.is_some() || self.unit.is_some() || self.skip_until_sync {
            return true;
        }
        let shared = self.shared.clone();
        let read_only = |f: &str| shared.functions.is_read_only(&self.database, f);
        match unit::plan(
            &self.client_in,
            &shared.classifier,
            &self.statements,
            self.unnamed_class.as_ref(),
            &read_only,
            shared.config.max_message_size,
        ) {
            Lookahead::Planned(traits) => {
                self.unit = Some(traits);
                true
            }
            Lookahead::Incomplete => false,
        }
    }

    /// Notes a statement of the current transaction, for stickiness.
    fn note_class(&mut self, class: &Classification) {
        let mut traits = UnitTraits::default();
        traits.absorb(class, |f| {
            self.shared.functions.is_read_only(&self.database, f)
        });
        self.transaction_wrote |= traits.wrote();
    }

    async fn on_client_message(&mut self, frame: Frame) -> Result<(), End> {
        let tag = frame.tag();
        if !FRONTEND_TAGS.contains(&tag) {
            return Err(End::Fatal(PgError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                format!("invalid frontend message type {tag}"),
            )));
        }
        if self.skip_until_sync && !matches!(tag, b'S' | b'X') {
            return Ok(());
        }
        match tag {
            b'Q' => self.on_query(frame).await,
            b'P' => self.on_parse(frame).await?,
            b'B' => self.on_bind(frame).await?,
            b'D' => self.on_describe(frame).await?,
            b'E' => {
                if self.ensure_server(tag).await {
                    self.forward(&frame);
                    self.expected.push(Expected::reply_to(tag));
                    if completion_tag(&self.bound_effect).is_some() {
                        self.effects_in_flight.push_back(self.bound_effect.clone());
                    }
                }
            }
            b'C' => self.on_close(frame)?,
            b'S' => {
                self.skip_until_sync = false;
                if self.server.is_some() {
                    self.forward(&frame);
                    if !self.copy_in {
                        self.expected.push(Expected::Sync);
                    }
                } else {
                    self.unit = None;
                    let status = self.client_status();
                    self.reply(messages::ready_for_query(status));
                }
            }
            b'H' | b'd' | b'c' | b'f' => {
                if self.server.is_some() {
                    self.forward(&frame);
                }
                if matches!(tag, b'c' | b'f') {
                    self.copy_in = false;
                }
            }
            b'F' => {
                if self.ensure_server(tag).await {
                    self.forward(&frame);
                    self.expected.push(Expected::Query);
                }
            }
            _ => return Err(End::Closed), // Terminate
        }
        Ok(())
    }

    async fn on_query(&mut self, frame: Frame) {
        let text = frame.body().strip_suffix(b"\0").unwrap_or(frame.body());
        let text = String::from_utf8_lossy(text);
        let effects: Vec<SessionEffect> = split_statements(&text)
            .into_iter()
            .map(session_effect)
            .collect();
        if let [effect @ (SessionEffect::Set { key, .. } | SessionEffect::Reset { key })] =
            effects.as_slice()
        {
            if key == ROUTE_SETTING {
                let effect = effect.clone();
                self.set_route(&effect);
                return;
            }
        }
        if let [SessionEffect::Deallocate(Some(name))] = effects.as_slice() {
            if self.transaction_status != b'E' && self.statements.remove(name.as_bytes()) {
                self.reply(messages::command_complete("DEALLOCATE"));
                let status = self.client_status();
                self.reply(messages::ready_for_query(status));
                return;
            }
        }
        if self.defer_begin(&frame, effects.len()) {
            return;
        }
        let planned = self.server.is_none();
        if !self.ensure_server(b'Q').await {
            return;
        }
        if !planned {
            let class = self.shared.classifier.classify(&text);
            self.note_class(&class);
        }
        for effect in effects {
            match effect {
                SessionEffect::Pin(reason) => self.pin(reason),
                effect if completion_tag(&effect).is_some() => {
                    self.effects_in_flight.push_back(effect)
                }
                _ => {}
            }
        }
        self.forward(&frame);
        self.expected.push(Expected::Query);
    }

    /// `SET pgsplit.route = primary | replica | auto` (and `RESET`), answered
    /// by pgsplit itself: the servers never see it.
    fn set_route(&mut self, effect: &SessionEffect) {
        let status = self.client_status();
        let (route, tag) = match effect {
            SessionEffect::Set { statement, .. } => {
                let value = setting_value(statement).unwrap_or_default();
                match parse_route(&value) {
                    Some(route) => (route, "SET"),
                    None => {
                        self.reply(invalid_route(&value).to_message());
                        self.reply(messages::ready_for_query(status));
                        return;
                    }
                }
            }
            _ => (self.default_route.route, "RESET"),
        };
        self.route.route = route;
        self.reply(messages::command_complete(tag));
        self.reply(messages::ready_for_query(status));
    }

    async fn on_parse(&mut self, frame: Frame) -> Result<(), End> {
        let Some(parse) = messages::parse_body(frame.body()) else {
            return Err(malformed("Parse"));
        };
        let query = String::from_utf8_lossy(parse.query);
        let effect = session_effect(&query);
        if let SessionEffect::Pin(reason) = effect {
            self.pin(reason);
        }
        let planned = self.server.is_none();
        let class = self.shared.classifier.classify(&query);
        if !planned {
            self.note_class(&class);
        }
        if parse.name.is_empty() {
            self.unnamed_effect = effect;
            self.unnamed_class = Some(class);
            if self.ensure_server(b'P').await {
                self.forward(&frame);
                self.expected.push(Expected::reply_to(b'P'));
            }
            return Ok(());
        }
        let client_name = parse.name.to_vec();
        if self.statements.get(&client_name).is_some() {
            let error = PgError::error(
                SqlState::DUPLICATE_PREPARED_STATEMENT,
                format!(
                    "prepared statement \"{}\" already exists",
                    String::from_utf8_lossy(&client_name)
                ),
            );
            self.reject(error, b'P');
            return Ok(());
        }
        let rest_offset = 5 + client_name.len() + 1;
        let parse_rest = frame.bytes().slice(rest_offset..);
        let statement = Arc::new(PreparedStatement {
            server_name: self.shared.statement_names.name_for(&parse_rest),
            parse_rest,
            effect,
            class,
        });
        if !self.ensure_server(b'P').await {
            return Ok(());
        }
        self.statements
            .insert(client_name.clone(), statement.clone());
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        if server.prepared.contains(&statement.server_name) {
            self.reply(messages::parse_complete());
        } else {
            server.prepared.insert(&statement.server_name);
            self.server_out.extend_from_slice(&messages::parse_renamed(
                &statement.server_name,
                &statement.parse_rest,
            ));
            self.expected.push(Expected::Reply {
                ends_with: b"1",
                prepared: Some(PreparedOnServer {
                    server_name: statement.server_name.clone(),
                    client_name: Some(client_name),
                }),
            });
        }
        Ok(())
    }

    /// Looks up a client statement by name, rejecting the request if the
    /// client never prepared it.
    fn lookup_statement(&mut self, name: &[u8], tag: u8) -> Option<Arc<PreparedStatement>> {
        let statement = self.statements.get(name).cloned();
        if statement.is_none() {
            let error = PgError::error(
                SqlState::INVALID_SQL_STATEMENT_NAME,
                format!(
                    "prepared statement \"{}\" does not exist",
                    String::from_utf8_lossy(name)
                ),
            );
            self.reject(error, tag);
        }
        statement
    }

    /// Prepares a client statement on the attached server connection if it
    /// is not there yet; the server's `ParseComplete` is swallowed.
    fn ensure_prepared(&mut self, statement: &PreparedStatement) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if server.prepared.insert(&statement.server_name) {
            self.server_out.extend_from_slice(&messages::parse_renamed(
                &statement.server_name,
                &statement.parse_rest,
            ));
            self.expected.push(Expected::Injected {
                reply: b'1',
                prepared: Some(PreparedOnServer {
                    server_name: statement.server_name.clone(),
                    client_name: None,
                }),
            });
        }
    }

    async fn on_bind(&mut self, frame: Frame) -> Result<(), End> {
        let Some((portal, statement_name, rest)) = messages::bind_body(frame.body()) else {
            return Err(malformed("Bind"));
        };
        if statement_name.is_empty() {
            self.bound_effect = self.unnamed_effect.clone();
            if self.ensure_server(b'B').await {
                self.forward(&frame);
                self.expected.push(Expected::reply_to(b'B'));
            }
            return Ok(());
        }
        let Some(statement) = self.lookup_statement(statement_name, b'B') else {
            return Ok(());
        };
        self.bound_effect = statement.effect.clone();
        self.note_class(&statement.class);
        if self.ensure_server(b'B').await {
            self.ensure_prepared(&statement);
            self.server_out.extend_from_slice(&messages::bind_renamed(
                portal,
                &statement.server_name,
                rest,
            ));
            self.expected.push(Expected::reply_to(b'B'));
        }
        Ok(())
    }

    async fn on_describe(&mut self, frame: Frame) -> Result<(), End> {
        let Some((kind, name)) = messages::describe_or_close_body(frame.body()) else {
            return Err(malformed("Describe"));
        };
        if kind == b'S' && !name.is_empty() {
            let Some(statement) = self.lookup_statement(name, b'D') else {
                return Ok(());
            };
            if self.ensure_server(b'D').await {
                self.ensure_prepared(&statement);
                self.server_out
                    .extend_from_slice(&messages::describe_or_close(
                        b'D',
                        b'S',
                        &statement.server_name,
                    ));
                self.expected.push(Expected::reply_to(b'D'));
            }
        } else if self.ensure_server(b'D').await {
            self.forward(&frame);
            self.expected.push(Expected::reply_to(b'D'));
        }
        Ok(())
    }

    /// `Close` of a named statement only forgets the client's name: the
    /// server copy stays cached for other clients.
    fn on_close(&mut self, frame: Frame) -> Result<(), End> {
        let Some((kind, name)) = messages::describe_or_close_body(frame.body()) else {
            return Err(malformed("Close"));
        };
        if kind == b'S' && !name.is_empty() {
            self.statements.remove(name);
            self.reply(messages::close_complete());
        } else if self.server.is_some() {
            self.forward(&frame);
            self.expected.push(Expected::reply_to(b'C'));
        } else {
            self.reply(messages::close_complete());
        }
        Ok(())
    }

    fn process_server_input(&mut self) {
        while let Some(server) = self.server.as_mut() {
            match server.next_buffered() {
                Ok(Some(frame)) => self.on_server_message(frame),
                Ok(None) => break,
                Err(error) => {
                    self.on_server_lost(error);
                    break;
                }
            }
        }
        self.release_due_synthetic();
    }

    fn on_server_message(&mut self, frame: Frame) {
        let tag = frame.tag();
        match tag {
            b'N' | b'A' => {
                self.client_out.extend_from_slice(frame.bytes());
                return;
            }
            b'S' => {
                if let Some(server) = self.server.as_mut() {
                    server.note_parameter(frame.body());
                }
                self.client_out.extend_from_slice(frame.bytes());
                return;
            }
            b'E' => {
                self.on_server_error(frame);
                return;
            }
            b'C' => self.on_command_complete(frame.body()),
            b'G' => {
                self.copy_in = true;
                self.expected.forget_syncs_behind_front();
            }
            _ => {}
        }
        self.release_due_synthetic();
        match self.expected.front() {
            Some(Expected::Injected { reply, .. }) if *reply == tag => {
                self.expected.pop();
            }
            Some(Expected::Reply { ends_with, .. }) => {
                let done = ends_with.contains(&tag);
                self.client_out.extend_from_slice(frame.bytes());
                if done {
                    self.expected.pop();
                }
            }
            _ => {
                self.client_out.extend_from_slice(frame.bytes());
                if tag == b'Z' {
                    self.expected.pop();
                    self.on_ready(frame.body().first().copied().unwrap_or(b'I'));
                }
            }
        }
    }

    fn on_server_error(&mut self, frame: Frame) {
        let fields = error_fields(frame.body());
        if matches!(fields.severity, Some(b"FATAL" | b"PANIC")) {
            // The server is about to close this connection; the client
            // learns why when it does.
            self.server_fatal = Some(relayed_error(&frame));
            return;
        }
        self.transaction_failed = true;
        self.release_due_synthetic();
        if !matches!(
            self.expected.front(),
            Some(Expected::Query | Expected::Sync) | None
        ) {
            for unprepared in self.expected.skip_to_sync() {
                if let Some(server) = self.server.as_mut() {
                    server.prepared.remove(&unprepared.server_name);
                }
                if let Some(client_name) = unprepared.client_name {
                    self.statements
                        .remove_if_server_name(&client_name, &unprepared.server_name);
                }
            }
        }
        self.client_out.extend_from_slice(frame.bytes());
    }

    fn on_command_complete(&mut self, body: &[u8]) {
        let tag = body.strip_suffix(b"\0").unwrap_or(body);
        if tag == b"ROLLBACK" {
            // Undoes this transaction's settings (a failed COMMIT reports ROLLBACK too).
            self.transaction_failed = true;
        }
        let matches = self
            .effects_in_flight
            .front()
            .and_then(completion_tag)
            .is_some_and(|expected| expected == tag);
        if !matches {
            return;
        }
        let Some(effect) = self.effects_in_flight.pop_front() else {
            return;
        };
        if matches!(
            effect,
            SessionEffect::DiscardAll | SessionEffect::Deallocate(None)
        ) {
            // Every statement on this server connection is gone, ours included.
            if let Some(server) = self.server.as_mut() {
                server.prepared.clear();
            }
            self.statements.clear();
        }
        self.effects_done.push(effect);
    }

    /// `ReadyForQuery` arrived and nothing older is owed: settle the
    /// transaction's session effects and, between transactions, give the
    /// server connection back.
    fn on_ready(&mut self, status: u8) {
        self.transaction_status = status;
        self.effects_in_flight.clear();
        if status != b'I' {
            return;
        }
        if std::mem::take(&mut self.transaction_wrote) {
            self.last_write = Some(Instant::now());
        }
        let effects = std::mem::take(&mut self.effects_done);
        let failed = std::mem::replace(&mut self.transaction_failed, false);
        if !effects.is_empty() {
            if failed {
                // Rolled back; the server's state is no longer known for sure.
                if let Some(server) = self.server.as_mut() {
                    server.applied_settings = None;
                }
            } else {
                for effect in &effects {
                    self.settings.apply(effect);
                }
                let settings = self.settings.effective().clone();
                if let Some(server) = self.server.as_mut() {
                    server.applied_settings = Some(settings);
                }
            }
        }
        let reusable = self.expected.is_empty() && self.pinned.is_none();
        if reusable && self.pool_mode() == PoolMode::Transaction {
            if let Some(server) = self.detach() {
                server.release();
            }
            self.finish_if_idle_during_shutdown();
        }
    }

    /// The server connection broke: answer whatever the client still waits
    /// for with an error, so it never hangs, and carry on without it.
    fn on_server_lost(&mut self, error: io::Error) {
        let Some(server) = self.detach() else {
            return;
        };
        tracing::warn!(%error, node = server.pool().node_name(), "server connection lost");
        drop(server);
        let error = self.server_fatal.take().unwrap_or_else(|| {
            PgError::error(
                SqlState::CONNECTION_FAILURE,
                format!("server connection lost: {error}"),
            )
        });
        let owed_ready = self.expected.outstanding_ready();
        let owed_anything = !self.expected.is_empty();
        let had_state = self.transaction_status != b'I'
            || self.pinned.is_some()
            || self.pool_mode() == PoolMode::Session;
        self.expected.clear();
        self.effects_in_flight.clear();
        self.effects_done.clear();
        self.transaction_failed = false;
        self.transaction_status = b'I';
        self.pinned = None;
        self.copy_in = false;
        if owed_anything {
            for _ in 0..owed_ready {
                self.client_out.extend_from_slice(&error.to_message());
                self.client_out
                    .extend_from_slice(&messages::ready_for_query(b'I'));
            }
            if owed_ready == 0 {
                self.client_out.extend_from_slice(&error.to_message());
                self.skip_until_sync = true;
            }
        } else if had_state {
            self.lost_state = Some(error);
        }
    }

    /// Returns or closes the server connection when the client leaves.
    async fn close(mut self) {
        let _ = self.flush().await;
        let Some(mut server) = self.detach() else {
            return;
        };
        let idle = self.transaction_status == b'I' && self.expected.is_empty();
        if !idle {
            return; // closing the connection rolls back whatever was open
        }
        if self.pinned.is_some() || self.pool_mode() == PoolMode::Session {
            let reset = tokio::time::timeout(
                self.shared.config.server_connect_timeout,
                server.run_silently("DISCARD ALL"),
            )
            .await;
            if !matches!(reset, Ok(Ok(None))) {
                return;
            }
            server.prepared.clear();
            server.applied_settings = Some(Default::default());
        }
        server.release();
    }
}

fn malformed(message: &str) -> End {
    End::Fatal(PgError::fatal(
        SqlState::PROTOCOL_VIOLATION,
        format!("invalid {message} message"),
    ))
}
