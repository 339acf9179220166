//! One client's session after login: the state machine that takes a server
//! connection for each transaction (or for the whole session), forwards
//! framed messages both ways, and keeps prepared statements and settings
//! working although consecutive transactions may use different servers.

mod acquire;
mod consistency;
mod idle;
mod parameters;
mod passthrough;
mod routing;
mod server;
mod statements;

use parameters::is_pgsplit_parameter;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::cancel::CancelKey;
use super::clients::{ClientState, Registration};
use super::last_parse::LastParse;
use super::login::Authenticated;
use super::responses::{EndTags, Expected, PreparedOnServer, ResponseQueue};
use super::settings::{replay_sql, SessionSettings};
use super::statements::{ClientStatements, PreparedStatement};
use super::stream::ClientStream;
use super::unit::{self, Lookahead, UnitTraits};
use crate::backend::{CheckoutError, CheckoutLimits, ConnectError, Pool, PooledConnection};
use crate::config::{Config, Consistency, PoolMode, Role, Route};
use crate::metrics::NodeCounters;
use crate::protocol::frame::{self, Frame};
use crate::protocol::messages::{self, error_fields};
use crate::protocol::{PgError, SqlState};
use crate::proxy::Shared;
use crate::router::classify::{Classification, Hint, TransactionControl};
use crate::router::{InFlight, Need, NoNode, SessionRoute};
use crate::sql::lexer::split_statements;
use crate::sql::session::setting_value;
use crate::sql::{query_text, quote_literal, session_effect, SessionEffect};

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

/// How much a client read asks for at least: requests are small, and an
/// idle client keeps what its buffer grew to.
const CLIENT_READ_CHUNK: usize = 4096;

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
    /// The client's span (peer, user, database), named as the parent of
    /// every event the session logs. Not entered around each poll of the
    /// session: that enter and exit cost ~6% of a transaction's CPU at
    /// the default `info` level.
    span: tracing::Span,
    /// The configuration in force, picked up once per batch of client
    /// input: the hot path reads a plain `Arc`, not the shared `ArcSwap`.
    config: Arc<Config>,
    /// `pool.mode` as the session started: a reload that changes it must
    /// not turn a session-mode client, whose state lives on its server
    /// connection, into a transaction-mode one (or back).
    pool_mode: PoolMode,
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
    /// The user it logged in as.
    user: String,
    /// Where this session's transactions go (rules, `SET pgsplit.route`).
    route: SessionRoute,
    /// The route from the config rules, which `RESET pgsplit.route` restores.
    default_route: SessionRoute,
    /// What this session may read after its writes (`pgsplit.consistency`).
    consistency: Consistency,
    /// This client in the registry the admin side lists.
    registration: Registration,
    /// The role of the attached server's node when it was attached (for metrics).
    server_role: Role,
    /// The attached node's counters, taken once per transaction.
    counters: Option<Arc<NodeCounters>>,
    /// When the oldest request still waiting for its `ReadyForQuery` was sent.
    query_started: Option<Instant>,
    /// Whether the statement being sent writes (for metrics).
    last_class_writes: bool,
    /// The planned unit that is about to start, once it has been looked at.
    unit: Option<UnitTraits>,
    /// The current transaction changed data.
    transaction_wrote: bool,
    /// When the client's last writing transaction ended, if its reads stay
    /// on the primary for a while (`sticky`, or a commit position unknown).
    last_write: Option<Instant>,
    /// Where the client's last write transaction committed (`SHOW pgsplit.last_lsn`).
    last_commit_lsn: Option<u64>,
    /// The WAL position the client's reads must see: its own last commit,
    /// or a later one handed over with `SET pgsplit.min_lsn`.
    min_lsn: Option<u64>,
    /// The client's `ReadyForQuery`, held until the commit position is known.
    held_ready: Option<Frame>,
    /// The commit position read from the server, until its `ReadyForQuery`.
    commit_position: Option<u64>,
    /// The unit being forwarded commits a write: ask for its position
    /// right behind its last message.
    commit_position_due: bool,
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
    /// The last `Parse` text, which drivers often send again and again.
    last_parse: LastParse,
    shutting_down: bool,
    finished: bool,
}

/// The FATAL a client gets when no server connection could greet it.
fn login_failure(error: CheckoutError) -> Bytes {
    match error {
        CheckoutError::Connect(ConnectError::Refused { error, .. }) => {
            Bytes::copy_from_slice(error.bytes())
        }
        CheckoutError::Timeout(_) => {
            PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, format!("pgsplit: {error}")).to_message()
        }
        other @ (CheckoutError::Connect(_) | CheckoutError::NoSuchNode(_)) => {
            PgError::fatal(SqlState::CONNECTION_FAILURE, other.to_string()).to_message()
        }
    }
}

/// Reads more server bytes if a server connection is attached; otherwise
/// never completes, so it can sit in a `select!`.
async fn fill(server: &mut Option<PooledConnection>) -> io::Result<()> {
    match server {
        Some(server) => server.fill().await,
        None => std::future::pending().await,
    }
}

fn completion_tag(effect: &SessionEffect) -> Option<&'static [u8]> {
    match effect {
        SessionEffect::Set { .. } | SessionEffect::SetTransient => Some(b"SET"),
        SessionEffect::Reset { .. } | SessionEffect::ResetAll => Some(b"RESET"),
        SessionEffect::DiscardAll => Some(b"DISCARD ALL"),
        SessionEffect::Deallocate(Some(_)) => Some(b"DEALLOCATE"),
        SessionEffect::Deallocate(None) => Some(b"DEALLOCATE ALL"),
        SessionEffect::None | SessionEffect::Pin(_) | SessionEffect::Show { .. } => None,
    }
}

impl Session {
    /// Finishes the login (server parameters, backend key) and runs the
    /// session until the client leaves, logging under `span`.
    pub async fn run(
        shared: Arc<Shared>,
        login: Authenticated,
        peer: SocketAddr,
        span: tracing::Span,
    ) {
        let request = login.request;
        let nodes = shared.config().nodes.len();
        let pools = (0..nodes)
            .filter_map(|node| shared.pool_for(node, &request.database, &request.user))
            .collect();
        let cancel_key = shared.cancels.register();
        let application_name = request
            .parameters
            .iter()
            .find(|(name, _)| name == "application_name")
            .map(|(_, value)| value.as_str());
        let user_limit = shared
            .config()
            .user(&request.user)
            .and_then(|u| u.max_connections);
        let Some(registration) = shared.clients.register(
            peer,
            &request.user,
            &request.database,
            application_name.unwrap_or_default(),
            user_limit,
        ) else {
            let error = PgError::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                format!("too many connections for role \"{}\"", request.user),
            );
            tracing::info!(parent: &span, %error, "client refused");
            let mut client = login.stream;
            let _ = client.write_all(&error.to_message()).await;
            return;
        };
        let route = shared.router.session_route(&request.user, application_name);
        let default_route = route.clone();
        // `options=-c pgsplit.route=primary` (PGOPTIONS) sets pgsplit's own
        // parameters at login; like their `SET`, the servers never see them.
        let (own_parameters, server_parameters): (Vec<_>, Vec<_>) = request
            .parameters
            .iter()
            .cloned()
            .partition(|(name, _)| is_pgsplit_parameter(name));
        let config = Arc::clone(&shared.config());
        let mut session = Session {
            pool_mode: config.pool.mode,
            config,
            settings: SessionSettings::from_startup(&server_parameters, &shared.startup_settings),
            client: login.stream,
            client_in: login.buffered,
            // Buffers grow with use: an idle client costs little memory.
            client_out: BytesMut::new(),
            pools,
            server: None,
            server_out: BytesMut::new(),
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
            user: request.user.clone(),
            default_route,
            route,
            consistency: shared.router.settings().consistency,
            registration,
            server_role: Role::Primary,
            counters: None,
            query_started: None,
            last_class_writes: false,
            unit: None,
            transaction_wrote: false,
            last_write: None,
            last_commit_lsn: None,
            min_lsn: None,
            held_ready: None,
            commit_position: None,
            commit_position_due: false,
            in_flight: None,
            deferred_begin: None,
            copy_in: false,
            unnamed_class: None,
            last_parse: LastParse::default(),
            shutting_down: false,
            finished: false,
            shared,
            span,
        };
        tracing::debug!(parent: &session.span, "client logged in");
        for (name, value) in &own_parameters {
            if let Err(error) = session.apply_pgsplit_parameter(name, Some(value)) {
                let _ = session
                    .client
                    .write_all(&PgError::fatal(error.code, error.message).to_message())
                    .await;
                return;
            }
        }
        match session.greet().await {
            Ok(()) => session.serve().await,
            Err(error) => {
                let _ = session.client.write_all(&error).await;
            }
        }
        session.close().await;
    }

    /// Takes on a reloaded configuration, if there is one.
    fn refresh_config(&mut self) {
        let current = self.shared.config();
        if !Arc::ptr_eq(&current, &self.config) {
            self.config = Arc::clone(&current);
        }
    }

    fn pool_mode(&self) -> PoolMode {
        self.pool_mode
    }

    /// Sends what a server sends after authentication. The first server
    /// connection is taken now so that an unknown database or an invalid
    /// startup setting fails the login, as it would on PostgreSQL.
    async fn greet(&mut self) -> Result<(), Bytes> {
        // Without a reachable primary (split brain, failover) reads still
        // work: greet from a replica then.
        let primary = self.shared.router.primary();
        let greeting = match primary {
            Some(node) => match self.checkout(node, Instant::now()).await {
                Ok(server) => Ok((server, node)),
                Err(CheckoutError::Connect(error)) if error.is_unreachable() => self
                    .checkout_replica()
                    .await
                    .ok_or_else(|| login_failure(CheckoutError::Connect(error))),
                Err(error) => Err(login_failure(error)),
            },
            None => self.checkout_replica().await.ok_or_else(|| {
                PgError::fatal(
                    SqlState::CONNECTION_FAILURE,
                    "pgsplit: no node can serve this session",
                )
                .to_message()
            }),
        };
        let (mut server, node) = greeting?;
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
        if self.pool_mode() == PoolMode::Session && primary == Some(node) {
            let in_flight = self.shared.router.start_transaction(node);
            let role = self.shared.topology.load().role_of(node);
            self.attach(server, in_flight, role);
        } else {
            server.release();
        }
        Ok(())
    }

    /// A connection to some replica that may serve reads, if any gives one
    /// (whatever the session's route: this is only for the greeting).
    async fn checkout_replica(&self) -> Option<(PooledConnection, usize)> {
        let any_replica = SessionRoute {
            route: Route::Replica,
            tag: None,
        };
        let primary = Vec::from_iter(self.shared.router.primary());
        let pick = self
            .shared
            .router
            .choose(Need::Read, &any_replica, &primary, None)
            .ok()?;
        let server = self.checkout(pick.node, Instant::now()).await.ok()?;
        Some((server, pick.node))
    }

    /// Takes a server connection from `node`'s pool; `now` is a recent
    /// clock reading (see [`Pool::checkout`]).
    async fn checkout(&self, node: usize, now: Instant) -> Result<PooledConnection, CheckoutError> {
        // A node added by a reload after this client logged in is looked up.
        let pool = match self.pools.get(node) {
            Some(pool) => pool.clone(),
            None => self
                .shared
                .pool_for(node, &self.database, &self.user)
                .ok_or(CheckoutError::NoSuchNode(node))?,
        };
        let limits = CheckoutLimits {
            wait: self.config.query_wait_timeout,
            login_retry: self.config.server_login_retry,
        };
        pool.checkout(limits, now).await
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

    /// Attaches `server`, whose node had `role` when it was chosen.
    fn attach(&mut self, server: PooledConnection, in_flight: InFlight, role: Role) {
        let node = in_flight.node();
        self.server_role = role;
        self.counters = self.shared.metrics.node(node);
        self.registration.entry.set(ClientState::Active, Some(node));
        self.in_flight = Some(in_flight);
        self.cancel_key
            .publish(&server.address, server.process_id, server.secret_key);
        self.server = Some(server);
    }

    fn detach(&mut self) -> Option<PooledConnection> {
        self.cancel_key.withdraw();
        self.registration.entry.set(ClientState::Idle, None);
        self.counters = None;
        self.in_flight = None;
        self.server.take()
    }

    /// The main loop: flush what is due, then wait for the client, the
    /// server or shutdown.
    async fn serve(&mut self) {
        self.shutting_down = self.registration.stop_requested();
        let limits = idle::IdleLimits::from_config(&self.config);
        // Without idle limits the clock is never read and the timer never fires.
        let idle_limits = limits.any();
        let mut last_activity = Instant::now();
        let idle_timer = tokio::time::sleep_until(self.idle_deadline(limits, last_activity).into());
        tokio::pin!(idle_timer);
        // Messages may have arrived together with the last login message.
        if !self.client_in.is_empty() {
            self.handle_client_input().await;
        }
        loop {
            if let Err(error) = self.flush().await {
                tracing::debug!(parent: &self.span, %error, "client connection lost");
                return;
            }
            if self.finished {
                return;
            }
            if idle_limits
                && self.idle_deadline_too_late(limits, last_activity, idle_timer.deadline().into())
            {
                idle_timer
                    .as_mut()
                    .reset(self.idle_deadline(limits, last_activity).into());
            }
            // `biased`: polled in order, without drawing a random number
            // each turn. The server comes first, so that what it has sent is
            // passed on before more of the client's input is taken in.
            tokio::select! {
                biased;
                filled = fill(&mut self.server) => match filled {
                    Ok(()) => {
                        if idle_limits {
                            last_activity = Instant::now();
                        }
                        self.process_server_input()
                    }
                    Err(error) => self.on_server_lost(error),
                },
                read = self.client.read_available(&mut self.client_in, CLIENT_READ_CHUNK) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if idle_limits {
                            last_activity = Instant::now();
                        }
                        self.handle_client_input().await
                    }
                },
                () = self.registration.stopped(), if !self.shutting_down => {
                    self.shutting_down = true;
                    self.finish_if_idle_during_shutdown();
                }
                () = &mut idle_timer, if idle_limits => {
                    if !self.on_idle_timer(limits, last_activity) {
                        idle_timer
                            .as_mut()
                            .reset(self.idle_deadline(limits, last_activity).into());
                    }
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
                tracing::info!(parent: &self.span, %error, "closing client session");
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
            self.client.send_all(&self.client_out).await?;
            self.client_out.clear();
        }
        Ok(())
    }

    async fn process_client_input(&mut self) -> Result<(), End> {
        self.refresh_config();
        let limit = self.config.max_message_size;
        loop {
            if !self.plan_unit() {
                break;
            }
            if self.forward_in_place(limit) {
                continue;
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

    /// Counts a statement sent to the attached server, for metrics.
    fn count_query(&self) {
        if let Some(counters) = &self.counters {
            counters.query(self.server_role, self.last_class_writes);
        }
    }

    /// Starts timing a request that ends with `ReadyForQuery`, unless an
    /// older one is still running (its time covers this one's wait).
    fn start_timer(&mut self) {
        self.query_started.get_or_insert_with(Instant::now);
    }

    fn pin(&mut self, reason: &'static str) {
        if self.pinned.is_none() && self.pool_mode() == PoolMode::Transaction {
            tracing::info!(parent: &self.span,
                reason,
                "client pinned to its server connection for the rest of its session"
            );
        }
        self.pinned = Some(reason);
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
                    self.execute_forwarded();
                }
            }
            b'C' => self.on_close(frame)?,
            b'S' => {
                self.skip_until_sync = false;
                if self.server.is_some() {
                    self.forward(&frame);
                    self.sync_forwarded();
                } else {
                    self.unit = None;
                    let status = self.client_status();
                    self.reply(messages::ready_for_query(status));
                }
            }
            b'H' | b'd' | b'c' | b'f' => {
                if self.server.is_some() {
                    self.forward(&frame);
                } else if tag == b'H' {
                    // A unit that ends at this Flush needed no server: its
                    // plan must not serve the next one.
                    self.unit = None;
                }
                if matches!(tag, b'c' | b'f') {
                    self.copy_in = false;
                }
            }
            b'F' => {
                if self.ensure_server(tag).await {
                    self.forward(&frame);
                    self.count_query();
                    self.start_timer();
                    self.expected.push(Expected::Query);
                    self.pipeline_commit_position();
                }
            }
            _ => return Err(End::Closed), // Terminate
        }
        Ok(())
    }

    async fn on_query(&mut self, frame: Frame) {
        let sql = frame.body().strip_suffix(b"\0").unwrap_or(frame.body());
        // Made a `str` only where needed: a planned query without session
        // effects needs no text at all here.
        let text = || query_text(sql);
        if self.config.log.queries {
            tracing::info!(parent: &self.span, query = %text(), "query");
        }
        // A query pgsplit answers itself must not leave its plan behind for
        // the next one.
        let unit = self.unit.take();
        // Mid-transaction no plan has looked at the query: classify it here.
        let class = unit.is_none().then(|| self.shared.classifier.classify(sql));
        let touches_session = unit.map_or_else(
            || class.as_ref().is_none_or(|c| c.touches_session),
            |unit| unit.touches_session,
        );
        // Most texts have no session effect, and need no splitting here.
        let effects: Vec<SessionEffect> = if touches_session {
            split_statements(&text())
                .iter()
                .map(|s| session_effect(s))
                .collect()
        } else {
            Vec::new()
        };
        match effects.as_slice() {
            [effect @ (SessionEffect::Set { key, .. } | SessionEffect::Reset { key })]
                if is_pgsplit_parameter(key) =>
            {
                let (key, effect) = (key.clone(), effect.clone());
                self.set_pgsplit_parameter(&key, &effect);
                return;
            }
            [SessionEffect::Show { key }] if is_pgsplit_parameter(key) => {
                let key = key.clone();
                self.show_pgsplit_parameter(&key);
                return;
            }
            [SessionEffect::Deallocate(Some(name))]
                if self.transaction_status != b'E' && self.statements.remove(name.as_bytes()) =>
            {
                self.reply(messages::command_complete("DEALLOCATE"));
                let status = self.client_status();
                self.reply(messages::ready_for_query(status));
                return;
            }
            _ => {}
        }
        self.unit = unit;
        if self.defer_begin(&frame, sql) {
            return;
        }
        let planned = self.server.is_none();
        if !self.ensure_server(b'Q').await {
            return;
        }
        if let Some(class) = class.filter(|_| !planned) {
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
        self.count_query();
        self.start_timer();
        self.expected.push(Expected::Query);
        self.pipeline_commit_position();
    }

    /// Runs `sql` on a connection about to go back to the pool; `false`
    /// when it failed or took too long, and the connection must be closed.
    async fn clean_up(&self, server: &mut PooledConnection, sql: &str) -> bool {
        let outcome =
            tokio::time::timeout(self.config.server_connect_timeout, server.run_silently(sql))
                .await;
        matches!(outcome, Ok(Ok(None)))
    }

    /// Returns or closes the server connection when the client leaves.
    async fn close(mut self) {
        let _ = self.flush().await;
        let Some(mut server) = self.detach() else {
            return;
        };
        if !self.expected.is_empty() {
            return; // closing the connection cancels and rolls back what runs
        }
        if self.transaction_status != b'I' {
            // Left open by the client (or `idle_in_transaction_timeout`):
            // rolled back, the connection goes back to the pool.
            if !self.clean_up(&mut server, "ROLLBACK").await {
                return;
            }
            // The transaction may have changed settings that the rollback undid.
            server.applied_settings = None;
        }
        if self.pinned.is_some() || self.pool_mode() == PoolMode::Session {
            if !self.clean_up(&mut server, "DISCARD ALL").await {
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
