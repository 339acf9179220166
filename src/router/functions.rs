//! Which functions may run on a replica: learnt from `pg_proc.provolatile`
//! on the primary, per database, plus the config's `read_only_functions` and
//! `write_functions`. A function pgsplit knows nothing about counts as a
//! write, so an unknown function never sends a write to a replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::backend::query_client::{self, QueryTarget};
use crate::backend::tls::ServerTls;
use crate::config::{Config, RoutingConfig};
use crate::monitor::{NodeState, SharedTopology};
use crate::sync::{lock, read, write};

/// How often a database's function list is reloaded.
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// At most one reload per database this often when an unknown function is
/// seen (it may have just been created).
const MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// One database's functions: name (and `schema.name`) → read-only.
#[derive(Default)]
struct DatabaseFunctions {
    read_only: RwLock<Arc<HashMap<String, bool>>>,
    /// When the last load started; `None` before the first.
    last_load: Mutex<Option<Instant>>,
}

/// Function volatility for every database clients use.
pub struct FunctionCatalog {
    routing: RoutingConfig,
    /// Each node, as whom to read `pg_proc` (`database` is set per load).
    sources: Vec<QueryTarget>,
    /// Which node to read from: the primary, or any node that is up (a
    /// physical replica has the same catalog).
    topology: SharedTopology,
    connect_timeout: Duration,
    databases: Mutex<HashMap<String, Arc<DatabaseFunctions>>>,
}

impl FunctionCatalog {
    /// Reads `pg_proc` with the `monitor` credentials, or without them only
    /// the config lists count.
    pub fn new(
        config: &Config,
        tls: Option<ServerTls>,
        topology: SharedTopology,
    ) -> FunctionCatalog {
        // The database is set per load.
        let sources = QueryTarget::monitor_targets(config, tls, "", "pgsplit-catalog");
        FunctionCatalog {
            routing: config.routing.clone(),
            sources,
            topology,
            connect_timeout: config.server_connect_timeout,
            databases: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `function` (lowercase, as written, maybe schema-qualified)
    /// is known not to write in `database`.
    pub fn is_read_only(&self, database: &str, function: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|f| f.eq_ignore_ascii_case(function));
        if listed(&self.routing.write_functions) {
            return false;
        }
        if listed(&self.routing.read_only_functions) {
            return true;
        }
        let functions = self.database(database);
        let known = read(&functions.read_only).get(function).copied();
        match known {
            Some(read_only) => read_only,
            None => {
                self.refresh(database, &functions, MISS_REFRESH_INTERVAL);
                false
            }
        }
    }

    fn database(&self, database: &str) -> Arc<DatabaseFunctions> {
        let functions = lock(&self.databases)
            .entry(database.to_owned())
            .or_default()
            .clone();
        self.refresh(database, &functions, REFRESH_INTERVAL);
        functions
    }

    /// Starts a background reload unless one started within `min_interval`.
    fn refresh(&self, database: &str, functions: &Arc<DatabaseFunctions>, min_interval: Duration) {
        let topology = self.topology.load();
        let node = topology.primary.or_else(|| {
            (0..topology.nodes.len()).find(|&n| topology.nodes[n].state != NodeState::Down)
        });
        let Some(mut source) = node.and_then(|n| self.sources.get(n)).cloned() else {
            return;
        };
        source.database = database.to_owned();
        let timeout = self.connect_timeout;
        {
            let mut last = lock(&functions.last_load);
            if last.is_some_and(|at| at.elapsed() < min_interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let functions = functions.clone();
        let database = database.to_owned();
        runtime.spawn(async move {
            match load(&source, timeout).await {
                Ok(map) => {
                    tracing::debug!(%database, functions = map.len(), "function volatility loaded");
                    *write(&functions.read_only) = Arc::new(map);
                }
                Err(error) => {
                    tracing::warn!(%error, %database, "could not read pg_proc; unknown functions go to the primary")
                }
            }
        });
    }
}

/// Reads every function's volatility; a name is read-only only if no
/// overload of it is volatile.
async fn load(source: &QueryTarget, timeout: Duration) -> anyhow::Result<HashMap<String, bool>> {
    let client = query_client::connect(source, timeout).await?;
    let rows = client
        .query(
            "SELECT n.nspname, p.proname, bool_and(p.provolatile <> 'v') \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             GROUP BY n.nspname, p.proname",
            &[],
        )
        .await?;
    let mut map = HashMap::with_capacity(rows.len() * 2);
    for row in rows {
        let schema: String = row.try_get(0)?;
        let name: String = row.try_get(1)?;
        let read_only: bool = row.try_get(2)?;
        let unqualified = map.entry(name.to_lowercase()).or_insert(true);
        *unqualified &= read_only;
        map.insert(
            format!("{}.{}", schema.to_lowercase(), name.to_lowercase()),
            read_only,
        );
    }
    Ok(map)
}
