//! A bank-transfer workload for failover tests: clients move money between
//! accounts in transactions through pgsplit and record every commit
//! pgsplit acknowledged, so a test can check that none was lost and that
//! the total never changed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgsplit::cluster::{LocalCluster, APP_DATABASE};

pub const ACCOUNTS: i64 = 100;
pub const OPENING_BALANCE: i64 = 1000;

/// Requires synchronous replication (`synchronous_standby_names`, on every
/// node so that a promoted one requires it too) and creates the accounts
/// and transfers tables on the primary.
pub fn set_up(cluster: &LocalCluster, synchronous_standby_names: &str) {
    for node in cluster.nodes() {
        let sql =
            format!("ALTER SYSTEM SET synchronous_standby_names = {synchronous_standby_names}");
        cluster
            .psql(node, "postgres", &sql)
            .expect("set synchronous_standby_names");
        cluster
            .psql(node, "postgres", "SELECT pg_reload_conf()")
            .expect("reload");
    }
    cluster
        .psql(
            cluster.primary(),
            APP_DATABASE,
            &format!(
                "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); \
                 INSERT INTO accounts SELECT g, {OPENING_BALANCE} FROM generate_series(1, {ACCOUNTS}) g; \
                 CREATE TABLE transfers (id bigint PRIMARY KEY, src int, dst int, amount int); \
                 GRANT ALL ON accounts, transfers TO app"
            ),
        )
        .expect("create the bank tables");
    cluster.wait_for_replicas().expect("replicas catch up");
}

/// What the clients did.
#[derive(Default)]
pub struct Ledger {
    /// Transfers whose COMMIT pgsplit acknowledged.
    pub acknowledged: Vec<i64>,
    /// Transactions that got an error.
    pub failed: usize,
    /// When each acknowledged transfer committed.
    pub commit_times: Vec<Instant>,
}

/// Clients running transfers until stopped.
pub struct Workload {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts `clients` clients against pgsplit at `addr`. With `reconnect`,
    /// a client whose connection broke opens a new one and goes on.
    pub fn start(addr: SocketAddr, clients: i64, reconnect: bool) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let tasks = (0..clients)
            .map(|client| {
                let (stop, ledger) = (stop.clone(), ledger.clone());
                tokio::spawn(async move {
                    let url = super::app_url(addr);
                    let mut connection = super::try_connect(&url).await.ok();
                    let mut sequence = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        let Some(db) = connection.as_ref().filter(|c| !c.is_closed()) else {
                            if !reconnect {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            connection = super::try_connect(&url).await.ok();
                            continue;
                        };
                        sequence += 1;
                        let id = client * 1_000_000 + sequence;
                        let (src, dst) = (1 + id % ACCOUNTS, 1 + (id * 7 + 3) % ACCOUNTS);
                        let amount = 1 + id % 50;
                        // Accounts are locked in id order, so transfers never deadlock.
                        let (first, second) = if src < dst {
                            ((src, -amount), (dst, amount))
                        } else {
                            ((dst, amount), (src, -amount))
                        };
                        let sql = format!(
                            "BEGIN; \
                             UPDATE accounts SET balance = balance + {} WHERE id = {}; \
                             UPDATE accounts SET balance = balance + {} WHERE id = {}; \
                             INSERT INTO transfers VALUES ({id}, {src}, {dst}, {amount}); \
                             COMMIT",
                            first.1, first.0, second.1, second.0
                        );
                        let outcome = db.batch_execute(&sql).await;
                        let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
                        match outcome {
                            Ok(()) => {
                                ledger.acknowledged.push(id);
                                ledger.commit_times.push(Instant::now());
                            }
                            Err(_) => ledger.failed += 1,
                        }
                    }
                })
            })
            .collect();
        Workload {
            stop,
            ledger,
            tasks,
        }
    }

    /// Commits acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acknowledged
            .len()
    }

    /// Waits until more than `count` commits were acknowledged; panics
    /// after `within` saying `what` did not happen.
    pub async fn wait_beyond(&self, count: usize, within: Duration, what: &str) {
        let start = Instant::now();
        while self.acknowledged() <= count {
            assert!(start.elapsed() < within, "{what} within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first commit acknowledged after `instant`, if any yet.
    pub fn first_commit_after(&self, instant: Instant) -> Option<Instant> {
        let ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger
            .commit_times
            .iter()
            .copied()
            .filter(|&t| t > instant)
            .min()
    }

    /// Stops the clients and returns what they did.
    pub async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a workload client panicked");
        }
        Arc::try_unwrap(self.ledger)
            .ok()
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .expect("the ledger is no longer shared")
    }
}

/// Checks on `node` that every acknowledged transfer is there and that the
/// money added up; returns how many transfers the node has.
pub fn verify(
    cluster: &LocalCluster,
    node: &pgsplit::cluster::LocalNode,
    ledger: &Ledger,
) -> usize {
    let ids = cluster
        .psql(node, APP_DATABASE, "SELECT id FROM transfers")
        .expect("read transfers");
    let present: std::collections::HashSet<i64> =
        ids.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let lost: Vec<i64> = ledger
        .acknowledged
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged transfers lost: {lost:?}");
    let total = cluster
        .psql(node, APP_DATABASE, "SELECT sum(balance) FROM accounts")
        .expect("sum balances");
    assert_eq!(total, (ACCOUNTS * OPENING_BALANCE).to_string());
    present.len()
}
