//! A throwaway PostgreSQL primary with streaming replicas, for `pgsplit demo`
//! and the integration tests.
//!
//! Everything lives in one temporary directory (data directories, logs and the
//! unix sockets) and is stopped and deleted when the [`LocalCluster`] is
//! dropped. The module is deliberately synchronous (`std::process` and
//! `std::net` only) so it can be used inside or outside a tokio runtime.
//!
//! When the current process runs as root, every server-side command runs as the
//! `postgres` OS user, because PostgreSQL refuses to run as root.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Superuser role created by `initdb`; the proxy's admin/health checks log in as it.
pub const SUPERUSER: &str = "postgres";
/// Password of [`SUPERUSER`] (SCRAM over TCP), so clients can authenticate over 127.0.0.1.
pub const SUPERUSER_PASSWORD: &str = "postgres";
/// Application role with a SCRAM-SHA-256 password, the normal client of the proxy.
pub const APP_USER: &str = "app";
/// Password of [`APP_USER`], so tests can log in through the proxy.
pub const APP_PASSWORD: &str = "app";
/// Database owned by [`APP_USER`], the default target of demo and tests.
pub const APP_DATABASE: &str = "app";
/// Role whose password is stored as MD5, to exercise the proxy's MD5 auth path.
pub const APP_MD5_USER: &str = "app_md5";
/// Password of [`APP_MD5_USER`].
pub const APP_MD5_PASSWORD: &str = "app_md5";

/// Environment variable that overrides where PostgreSQL binaries are looked up.
pub const PG_BIN_ENV: &str = "PGSPLIT_PG_BIN";

/// Seconds `pg_ctl start -w` waits for a server to accept connections.
const PG_CTL_TIMEOUT_SECS: u32 = 60;
/// Hard limit on any single external command, so a stuck tool cannot hang a test forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// How long replication may take to catch up or to start streaming.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of a node's log appended to error messages.
const LOG_TAIL_LINES: usize = 30;

/// One PostgreSQL server of a [`LocalCluster`]; callers need its port and data dir to connect or inspect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// Node name, `pg1` for the primary, `pg2`, `pg3`, ... for replicas (also the replica's `application_name`).
    pub name: String,
    /// TCP port on 127.0.0.1 (and the unix socket's port number).
    pub port: u16,
    /// The node's data directory.
    pub data_dir: PathBuf,
}

impl LocalNode {
    /// Server log file (next to the data directory), useful when diagnosing failures.
    pub fn log_file(&self) -> PathBuf {
        match self.data_dir.parent() {
            Some(parent) => parent.join(format!("{}.log", self.name)),
            None => PathBuf::from(format!("{}.log", self.name)),
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join("postmaster.pid")
    }
}

/// OS account the server commands run as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// A primary and N streaming replicas in a temporary directory, stopped and deleted on drop.
#[derive(Debug)]
pub struct LocalCluster {
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    /// Primary first, then replicas.
    nodes: Vec<LocalNode>,
    superuser_password: String,
    /// Root of the temp dir; also the unix socket directory.
    root: PathBuf,
    tempdir: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Creates and starts a primary plus `replicas` streaming replicas; returns once all replicas stream.
    ///
    /// On failure everything started so far is stopped and the temp dir removed.
    pub fn start(replicas: usize) -> Result<LocalCluster> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as_user()?;
        let tempdir = tempfile::Builder::new()
            .prefix("pgsplit-cluster-")
            .tempdir()
            .context("creating temporary directory for the cluster")?;
        let root = tempdir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", root.display()))?;
        if let Some(user) = &run_as {
            chown(&root, user)?;
        }
        // From here on, dropping `cluster` (e.g. via `?`) stops whatever was started.
        let mut cluster = LocalCluster {
            bin_dir,
            run_as,
            nodes: Vec::new(),
            superuser_password: SUPERUSER_PASSWORD.to_string(),
            root,
            tempdir: Some(tempdir),
        };
        cluster.init_primary()?;
        cluster.create_app_roles()?;
        for i in 0..replicas {
            cluster.add_replica(i + 2)?;
        }
        cluster.wait_for_streaming(replicas)?;
        Ok(cluster)
    }

    /// The read-write node, so callers know where writes must go.
    pub fn primary(&self) -> &LocalNode {
        &self.nodes[0]
    }

    /// The hot-standby nodes, in creation order (`pg2`, `pg3`, ...).
    pub fn replicas(&self) -> &[LocalNode] {
        &self.nodes[1..]
    }

    /// All nodes, primary first, for building proxy configs.
    pub fn nodes(&self) -> impl Iterator<Item = &LocalNode> {
        self.nodes.iter()
    }

    /// The PostgreSQL bin dir in use, so callers can find psql, pgbench, ...
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Full path of a PostgreSQL tool (e.g. `"pgbench"`) from [`Self::bin_dir`].
    pub fn bin(&self, tool: &str) -> PathBuf {
        self.bin_dir.join(tool)
    }

    /// Unix socket directory of all nodes; connections there use trust auth.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// Password of the `postgres` role, needed for SCRAM logins over TCP.
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// Runs SQL on a node as the superuser (psql over the unix socket) and returns trimmed stdout,
    /// so tests can set up and inspect state without a client library.
    ///
    /// Uses `psql -XAtq -v ON_ERROR_STOP=1 -c sql`; the error carries psql's stderr.
    pub fn psql(&self, node: &LocalNode, database: &str, sql: &str) -> Result<String> {
        self.psql_many(node, database, &[sql])
    }

    /// Blocks until every replica has replayed the primary's current WAL position,
    /// so reads on replicas see previously committed writes.
    pub fn wait_for_replicas(&self) -> Result<()> {
        let lsn = self.psql(self.primary(), "postgres", "SELECT pg_current_wal_lsn()")?;
        let sql = format!(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, false)",
            sql_literal(&lsn)
        );
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        for replica in self.replicas() {
            loop {
                let last = match self.psql(replica, "postgres", &sql) {
                    Ok(out) if out == "t" => break,
                    Ok(out) => format!("replay position not reached (got {out:?})"),
                    Err(err) => format!("{err:#}"),
                };
                if Instant::now() >= deadline {
                    bail!(
                        "replica {} did not replay up to {lsn} within {:?}: {last}{}",
                        replica.name,
                        REPLICATION_TIMEOUT,
                        log_tail(&replica.log_file())
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Stops one node with `pg_ctl stop -m fast`, to simulate a node going away.
    pub fn stop_node(&self, node: &LocalNode) -> Result<()> {
        self.pg_ctl_stop(node, "fast")
    }

    /// Stops one node with `pg_ctl stop -m immediate`: a crash, as far as
    /// clients and replicas can tell.
    pub fn kill_node(&self, node: &LocalNode) -> Result<()> {
        self.pg_ctl_stop(node, "immediate")
    }

    fn pg_ctl_stop(&self, node: &LocalNode, mode: &str) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&node.data_dir)
            .args(["-m", mode, "-w"])
            .arg("-t")
            .arg(PG_CTL_TIMEOUT_SECS.to_string())
            .arg("stop");
        self.run(cmd, Some(node)).map(drop)
    }

    /// Starts a stopped node with `pg_ctl start -w`, waiting until it accepts connections.
    pub fn start_node(&self, node: &LocalNode) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&node.data_dir)
            .arg("-l")
            .arg(node.log_file())
            .arg("-w")
            .arg("-t")
            .arg(PG_CTL_TIMEOUT_SECS.to_string())
            .arg("start");
        self.run(cmd, Some(node)).map(drop)
    }

    /// Turns a former primary into a streaming replica of `primary`, as an
    /// operator would after a failover: clean stop, `pg_rewind` from the new
    /// primary, `standby.signal` and `primary_conninfo`, start.
    pub fn rejoin_as_replica(&self, node: &LocalNode, primary: &LocalNode) -> Result<()> {
        if node.pid_file().exists() {
            self.stop_node(node)?;
        }
        let source = format!(
            "host=127.0.0.1 port={} user={} password={} dbname=postgres",
            primary.port,
            SUPERUSER,
            conninfo_quote(&self.superuser_password)
        );
        let mut cmd = self.command("pg_rewind");
        cmd.arg("--target-pgdata")
            .arg(&node.data_dir)
            .arg(format!("--source-server={source}"));
        self.run(cmd, Some(node))
            .with_context(|| format!("pg_rewind of {}", node.name))?;
        self.make_standby_of(node, primary)?;
        self.start_node(node)
    }

    /// Fast stop followed by start, to simulate a node restart (connections are dropped).
    pub fn restart_node(&self, node: &LocalNode) -> Result<()> {
        self.stop_node(node)?;
        self.start_node(node)
    }

    /// Stops every running node (immediate mode), ignoring errors; idempotent and also called by Drop.
    pub fn stop(&mut self) {
        for node in self.nodes.iter().rev() {
            if !node.pid_file().exists() {
                continue;
            }
            if let Err(err) = self.kill_node(node) {
                tracing::warn!(node = %node.name, "stopping node failed: {err:#}");
            }
        }
    }

    // ----- construction -------------------------------------------------------------------

    fn init_primary(&mut self) -> Result<()> {
        let node = self.new_node(1)?;
        self.nodes.push(node.clone());

        let pwfile = self.root.join("superuser.pw");
        write_private_file(&pwfile, &format!("{}\n", self.superuser_password))?;
        if let Some(user) = &self.run_as {
            chown(&pwfile, user)?;
        }
        let mut result = Ok(());
        for locale in ["C.UTF-8", "C"] {
            let mut cmd = self.command("initdb");
            cmd.arg("-D")
                .arg(&node.data_dir)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(["-E", "UTF8"])
                .arg(format!("--locale={locale}"))
                .arg("--no-sync");
            result = self.run(cmd, None).map(drop);
            if result.is_ok() {
                break;
            }
            // initdb cleans up after itself, but make sure the next attempt starts fresh.
            let _ = fs::remove_dir_all(&node.data_dir);
        }
        let _ = fs::remove_file(&pwfile);
        result.context("initdb failed")?;

        let conf = [
            "".to_string(),
            "# added by pgsplit::cluster".to_string(),
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("port = {}", node.port),
            format!(
                "unix_socket_directories = {}",
                conf_quote(&self.root.to_string_lossy())
            ),
            "wal_level = replica".to_string(),
            "max_wal_senders = 10".to_string(),
            "max_replication_slots = 10".to_string(),
            "hot_standby = on".to_string(),
            "fsync = off".to_string(),
            "synchronous_commit = on".to_string(),
            "full_page_writes = on".to_string(),
            // Room for 256 direct pgbench clients beside the pools of the
            // proxies that bench/compare.sh runs side by side.
            "max_connections = 400".to_string(),
            "shared_buffers = 32MB".to_string(),
            "wal_keep_size = 256MB".to_string(),
            "logging_collector = off".to_string(),
            "password_encryption = 'scram-sha-256'".to_string(),
            // Replicas reconnect quickly after the primary restarts (default is 5 s).
            "wal_retrieve_retry_interval = '250ms'".to_string(),
            // pg_rewind can turn a former primary into a replica.
            "wal_log_hints = on".to_string(),
        ];
        append_lines(&node.data_dir.join("postgresql.conf"), &conf)?;
        self.ensure_hba(&node)?;
        self.start_new_node(0)
    }

    /// Makes sure TCP logins and replication from loopback use SCRAM (initdb's
    /// `--auth-host` normally writes exactly these lines), except for the MD5 test role.
    fn ensure_hba(&self, node: &LocalNode) -> Result<()> {
        let path = node.data_dir.join("pg_hba.conf");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let present: Vec<Vec<&str>> = text
            .lines()
            .map(|l| {
                l.split('#')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect()
            })
            .filter(|words: &Vec<&str>| !words.is_empty())
            .collect();
        let missing: Vec<String> = ["all", "replication"]
            .iter()
            .map(|db| format!("host {db} all 127.0.0.1/32 scram-sha-256"))
            .filter(|line| {
                let want: Vec<&str> = line.split_whitespace().collect();
                !present.contains(&want)
            })
            .collect();
        // pg_hba.conf is first-match: put our lines in front. A `scram-sha-256`
        // line rejects roles whose password is stored as MD5, so the MD5 role
        // gets its own `md5` line first.
        let mut new_text = format!("host all {APP_MD5_USER} 127.0.0.1/32 md5\n");
        for line in missing {
            new_text.push_str(&line);
            new_text.push('\n');
        }
        new_text.push_str(&text);
        fs::write(&path, new_text).with_context(|| format!("writing {}", path.display()))
    }

    fn create_app_roles(&self) -> Result<()> {
        self.psql_many(
            self.primary(),
            "postgres",
            &[
                &format!(
                    "CREATE ROLE {APP_USER} LOGIN PASSWORD {}",
                    sql_literal(APP_PASSWORD)
                ),
                &format!("CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}"),
                "SET password_encryption = 'md5'",
                &format!(
                    "CREATE ROLE {APP_MD5_USER} LOGIN PASSWORD {}",
                    sql_literal(APP_MD5_PASSWORD)
                ),
                &format!("GRANT ALL ON DATABASE {APP_DATABASE} TO {APP_MD5_USER}"),
            ],
        )
        .context("creating application roles")?;
        // PostgreSQL 15+ no longer lets PUBLIC create in schema public; let app_md5 create tables too.
        self.psql(
            self.primary(),
            APP_DATABASE,
            &format!("GRANT ALL ON SCHEMA public TO {APP_MD5_USER}"),
        )
        .context("granting schema privileges")?;
        Ok(())
    }

    fn add_replica(&mut self, number: usize) -> Result<()> {
        let node = self.new_node(number)?;
        let index = self.nodes.len();
        self.nodes.push(node.clone());
        let primary = self.primary().clone();

        let mut cmd = self.command("pg_basebackup");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(primary.port.to_string())
            .args(["-U", SUPERUSER, "-D"])
            .arg(&node.data_dir)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", &self.superuser_password);
        self.run(cmd, Some(&primary))
            .with_context(|| format!("base backup for {}", node.name))?;
        fs::set_permissions(&node.data_dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", node.data_dir.display()))?;

        // `-R` writes primary_conninfo (normally including the password from
        // PGPASSWORD) but with application_name=pg_basebackup's default; write our
        // own so pg_stat_replication shows the node name. The last setting wins.
        self.make_standby_of(&node, &primary)?;
        append_lines(
            &node.data_dir.join("postgresql.conf"),
            &[format!("port = {}", node.port)],
        )?;
        self.start_new_node(index)
    }

    /// Makes a stopped node's data directory a standby of `primary`:
    /// `standby.signal` and a `primary_conninfo` naming the node (as
    /// `application_name`), which wins over earlier ones.
    fn make_standby_of(&self, node: &LocalNode, primary: &LocalNode) -> Result<()> {
        let signal = node.data_dir.join("standby.signal");
        if !signal.exists() {
            write_private_file(&signal, "")?;
            if let Some(user) = &self.run_as {
                chown(&signal, user)?;
            }
        }
        let conninfo = format!(
            "host=127.0.0.1 port={} user={} password={} application_name={}",
            primary.port,
            SUPERUSER,
            conninfo_quote(&self.superuser_password),
            node.name
        );
        append_lines(
            &node.data_dir.join("postgresql.auto.conf"),
            &[format!("primary_conninfo = {}", conf_quote(&conninfo))],
        )
    }

    /// Starts a freshly created node; if its port was taken meanwhile, retries once on a new port.
    fn start_new_node(&mut self, index: usize) -> Result<()> {
        let node = self.nodes[index].clone();
        let Err(err) = self.start_node(&node) else {
            return Ok(());
        };
        let log = fs::read_to_string(node.log_file()).unwrap_or_default();
        let bind_failure = [
            "Address already in use",
            "could not bind",
            "could not create any TCP/IP sockets",
            "could not create lock file",
        ]
        .iter()
        .any(|needle| log.contains(needle));
        if !bind_failure || node.pid_file().exists() {
            return Err(err);
        }
        let port = self.free_port()?;
        tracing::info!(node = %node.name, old = node.port, new = port, "port taken, retrying");
        append_lines(
            &node.data_dir.join("postgresql.conf"),
            &[format!("port = {port}")],
        )?;
        self.nodes[index].port = port;
        let node = self.nodes[index].clone();
        self.start_node(&node)
            .with_context(|| format!("retrying start of {} on a fresh port", node.name))
    }

    fn wait_for_streaming(&self, replicas: usize) -> Result<()> {
        if replicas == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        let sql = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'";
        loop {
            let last = match self.psql(self.primary(), "postgres", sql) {
                Ok(out) if out == replicas.to_string() => return Ok(()),
                Ok(out) => format!("{out} of {replicas} replicas streaming"),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() >= deadline {
                let logs: String = self
                    .replicas()
                    .iter()
                    .map(|r| log_tail(&r.log_file()))
                    .collect();
                bail!(
                    "replicas did not start streaming within {REPLICATION_TIMEOUT:?}: {last}{logs}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn new_node(&self, number: usize) -> Result<LocalNode> {
        let name = format!("pg{number}");
        Ok(LocalNode {
            port: self.free_port()?,
            data_dir: self.root.join(&name),
            name,
        })
    }

    /// A currently free loopback port not used by another node of this cluster.
    fn free_port(&self) -> Result<u16> {
        for _ in 0..20 {
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .context("binding 127.0.0.1:0 to find a port")?;
            let port = listener.local_addr()?.port();
            if !self.nodes.iter().any(|n| n.port == port) {
                return Ok(port);
            }
        }
        bail!("could not find a free loopback port")
    }

    // ----- running commands ---------------------------------------------------------------

    fn psql_many(&self, node: &LocalNode, database: &str, commands: &[&str]) -> Result<String> {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.root)
            .arg("-p")
            .arg(node.port.to_string())
            .args(["-U", SUPERUSER, "-d", database]);
        for sql in commands {
            cmd.arg("-c").arg(sql);
        }
        let out = self.run(cmd, None).map_err(|err| {
            // Connection problems are best explained by the server log; SQL errors are not.
            let text = format!("{err:#}");
            if text.contains("connection to server") || text.contains("could not connect") {
                anyhow!("{text}{}", log_tail(&node.log_file()))
            } else {
                err
            }
        })?;
        Ok(out.trim().to_string())
    }

    /// A command for a PostgreSQL tool with a clean environment, run as the
    /// `postgres` OS user when we are root.
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin(tool));
        // Inherited PGHOST/PGPORT/PGUSER/... must not redirect our tools.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid)
                .gid(user.gid)
                .env("HOME", &user.home)
                .env("USER", SUPERUSER)
                .env("LOGNAME", SUPERUSER);
        }
        cmd
    }

    /// Runs a command to completion (with a safety timeout) and returns its stdout;
    /// on failure the error names the command and carries stderr and, when given,
    /// the tail of `node`'s log.
    fn run(&self, mut cmd: Command, node: Option<&LocalNode>) -> Result<String> {
        let desc = describe(&cmd);
        let (status, stdout, stderr) = run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
            .with_context(|| format!("running `{desc}`"))?;
        if status.is_some_and(|s| s.success()) {
            return Ok(stdout);
        }
        let what = match status {
            Some(status) => format!("failed ({status})"),
            None => format!("timed out after {COMMAND_TIMEOUT:?}"),
        };
        let mut msg = format!("`{desc}` {what}");
        if !stderr.trim().is_empty() {
            msg.push_str(&format!("\nstderr:\n{}", stderr.trim_end()));
        }
        if !stdout.trim().is_empty() && stderr.trim().is_empty() {
            msg.push_str(&format!("\nstdout:\n{}", stdout.trim_end()));
        }
        if let Some(node) = node {
            msg.push_str(&log_tail(&node.log_file()));
        }
        Err(anyhow!(msg))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.tempdir.take() {
            let path = dir.path().to_path_buf();
            if let Err(err) = dir.close() {
                tracing::warn!("removing {} failed: {err}", path.display());
            }
        }
    }
}

/// Spawns `cmd` with piped output and waits up to `timeout`; `None` status means it was killed.
fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> std::io::Result<(Option<ExitStatus>, String, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_timeout(&mut child, timeout)?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// The last lines of a log file, formatted for appending to an error message.
fn log_tail(path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    format!(
        "\n--- last lines of {} ---\n{}",
        path.display(),
        lines[start..].join("\n")
    )
}

/// Locates the PostgreSQL bin dir: `$PGSPLIT_PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin`, or `pg_config --bindir`.
fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!(
                "{PG_BIN_ENV}={} does not contain initdb; point it at a PostgreSQL server bin directory",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = parse_version(&name) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    if let Some((_, bin)) = best {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").is_file() {
                return Ok(dir);
            }
        }
    }
    bail!(
        "no PostgreSQL server binaries found (checked ${PG_BIN_ENV}, /usr/lib/postgresql/*/bin, \
         `pg_config --bindir`); install PostgreSQL server binaries: apt-get install postgresql"
    )
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// `Some(postgres user)` when running as root (PostgreSQL refuses to run as root), else `None`.
fn run_as_user() -> Result<Option<RunAs>> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut entry = find_passwd_entry(&passwd, SUPERUSER);
    if entry.is_none() {
        // Users from NSS sources other than /etc/passwd.
        if let Ok(out) = Command::new("getent").args(["passwd", SUPERUSER]).output() {
            entry = find_passwd_entry(&String::from_utf8_lossy(&out.stdout), SUPERUSER);
        }
    }
    entry.map(Some).ok_or_else(|| {
        anyhow!(
            "running as root, but there is no `{SUPERUSER}` OS user to run PostgreSQL as; \
             install PostgreSQL server binaries (apt-get install postgresql) or run as a normal user"
        )
    })
}

fn effective_uid() -> Result<u32> {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u`")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing output of `id -u`")
}

fn find_passwd_entry(passwd: &str, user: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || fields[0] != user {
            return None;
        }
        Some(RunAs {
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: PathBuf::from(fields[5]),
        })
    })
}

fn chown(path: &Path, user: &RunAs) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {} to uid {}", path.display(), user.uid))
}

fn write_private_file(path: &Path, contents: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Appends lines to a config file (keeping its owner, since the file already exists).
fn append_lines(path: &Path, lines: &[String]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut text = lines.join("\n");
    text.push('\n');
    file.write_all(text.as_bytes())
        .with_context(|| format!("appending to {}", path.display()))
}

/// Quotes a value for postgresql.conf (`'` doubled, backslashes escaped).
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a value for a libpq conninfo string.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Quotes a SQL string literal.
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(conninfo_quote("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(sql_literal("it's"), "'it''s'");
    }

    #[test]
    fn passwd_parsing() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        let user = find_passwd_entry(passwd, "postgres").unwrap();
        assert_eq!((user.uid, user.gid), (101, 104));
        assert_eq!(user.home, PathBuf::from("/var/lib/postgresql"));
        assert!(find_passwd_entry(passwd, "nobody").is_none());
    }

    #[test]
    fn cluster_can_be_shared_across_test_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LocalCluster>();
    }

    #[test]
    fn version_ordering() {
        assert!(parse_version("15").unwrap() > parse_version("9.6").unwrap());
        assert!(parse_version("16").unwrap() > parse_version("15").unwrap());
        assert!(parse_version("main").is_none());
    }

    fn pid_of(node: &LocalNode) -> u32 {
        let text = fs::read_to_string(node.pid_file()).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    /// True if `pid` is a live (non-zombie) process.
    fn alive(pid: u32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                // Field 3 (after the parenthesised command name) is the state.
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            }
            Err(_) => false,
        }
    }

    fn tcp_psql(
        cluster: &LocalCluster,
        port: u16,
        user: &str,
        password: &str,
        sql: &str,
    ) -> String {
        let out = Command::new(cluster.bin("psql"))
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-U", user, "-d", APP_DATABASE, "-c", sql])
            .env("PGPASSWORD", password)
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql as {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn cluster_with_two_replicas() {
        let started = Instant::now();
        let cluster = LocalCluster::start(2).unwrap();
        eprintln!("1+2 cluster started in {:?}", started.elapsed());

        let primary = cluster.primary().clone();
        assert_eq!(primary.name, "pg1");
        let names: Vec<&str> = cluster.nodes().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["pg1", "pg2", "pg3"]);
        assert_eq!(cluster.replicas().len(), 2);
        assert!(cluster.bin("pgbench").is_file());
        assert!(cluster.socket_dir().is_dir());
        for node in cluster.nodes() {
            let mode = fs::metadata(&node.data_dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", node.name);
        }

        // Roles and password storage.
        let stored = cluster
            .psql(
                &primary,
                "postgres",
                "SELECT rolname || ':' || left(rolpassword, 14) FROM pg_authid \
                 WHERE rolname IN ('app', 'app_md5') ORDER BY rolname",
            )
            .unwrap();
        let stored: Vec<&str> = stored.lines().collect();
        assert_eq!(stored.len(), 2);
        assert!(stored[0].starts_with("app:SCRAM-SHA-256$"), "{stored:?}");
        assert!(stored[1].starts_with("app_md5:md5"), "{stored:?}");
        assert_eq!(
            tcp_psql(
                &cluster,
                primary.port,
                APP_USER,
                APP_PASSWORD,
                "SELECT current_user"
            ),
            APP_USER
        );
        assert_eq!(
            tcp_psql(
                &cluster,
                primary.port,
                APP_MD5_USER,
                APP_MD5_PASSWORD,
                "CREATE TABLE md5_t(x int); SELECT current_user"
            ),
            APP_MD5_USER
        );
        assert_eq!(
            tcp_psql(
                &cluster,
                primary.port,
                SUPERUSER,
                cluster.superuser_password(),
                "SELECT 1"
            ),
            "1"
        );
        let apps = cluster
            .psql(
                &primary,
                "postgres",
                "SELECT string_agg(application_name, ',' ORDER BY application_name) \
                 FROM pg_stat_replication",
            )
            .unwrap();
        assert_eq!(apps, "pg2,pg3");

        // Replication.
        cluster
            .psql(
                &primary,
                APP_DATABASE,
                "CREATE TABLE t(id int primary key); INSERT INTO t SELECT generate_series(1, 1000)",
            )
            .unwrap();
        cluster.wait_for_replicas().unwrap();
        for replica in cluster.replicas() {
            assert_eq!(
                cluster
                    .psql(replica, APP_DATABASE, "SELECT count(*) FROM t")
                    .unwrap(),
                "1000"
            );
            assert_eq!(
                cluster
                    .psql(replica, "postgres", "SELECT pg_is_in_recovery()")
                    .unwrap(),
                "t"
            );
            let err = cluster
                .psql(replica, APP_DATABASE, "INSERT INTO t VALUES (0)")
                .unwrap_err();
            assert!(format!("{err:#}").contains("read-only"), "{err:#}");
        }
        assert_eq!(
            cluster
                .psql(&primary, "postgres", "SELECT pg_is_in_recovery()")
                .unwrap(),
            "f"
        );

        // Restart the primary: it answers again and replicas resume streaming.
        let old_pid = pid_of(&primary);
        cluster.restart_node(&primary).unwrap();
        assert_ne!(pid_of(&primary), old_pid);
        assert_eq!(
            cluster
                .psql(&primary, APP_DATABASE, "SELECT count(*) FROM t")
                .unwrap(),
            "1000"
        );
        cluster
            .psql(&primary, APP_DATABASE, "INSERT INTO t VALUES (1001)")
            .unwrap();
        cluster.wait_for_replicas().unwrap();
        for replica in cluster.replicas() {
            assert_eq!(
                cluster
                    .psql(replica, APP_DATABASE, "SELECT count(*) FROM t")
                    .unwrap(),
                "1001"
            );
        }

        // Stop/start a replica.
        let replica = cluster.replicas()[0].clone();
        cluster.stop_node(&replica).unwrap();
        assert!(!replica.pid_file().exists());
        assert!(cluster.psql(&replica, "postgres", "SELECT 1").is_err());
        cluster.start_node(&replica).unwrap();
        assert_eq!(cluster.psql(&replica, "postgres", "SELECT 1").unwrap(), "1");

        // Drop stops everything and removes the directory.
        let pids: Vec<u32> = cluster.nodes().map(pid_of).collect();
        assert!(pids.iter().all(|&pid| alive(pid)));
        let root = cluster.socket_dir().to_path_buf();
        drop(cluster);
        for pid in pids {
            assert!(!alive(pid), "postmaster {pid} still running");
        }
        assert!(!root.exists(), "{} not removed", root.display());
    }

    #[test]
    fn start_retries_on_a_fresh_port_when_taken() {
        let mut cluster = LocalCluster::start(0).unwrap();
        let primary = cluster.primary().clone();
        cluster.stop_node(&primary).unwrap();
        let squatter = TcpListener::bind(("127.0.0.1", primary.port)).unwrap();
        cluster.start_new_node(0).unwrap();
        drop(squatter);
        let moved = cluster.primary().clone();
        assert_ne!(moved.port, primary.port);
        assert_eq!(
            cluster.psql(&moved, "postgres", "SHOW port").unwrap(),
            moved.port.to_string()
        );
    }

    #[test]
    fn primary_only_cluster_and_idempotent_stop() {
        let mut cluster = LocalCluster::start(0).unwrap();
        assert!(cluster.replicas().is_empty());
        cluster.wait_for_replicas().unwrap();
        let primary = cluster.primary().clone();
        assert_eq!(
            cluster.psql(&primary, APP_DATABASE, "SELECT 42").unwrap(),
            "42"
        );
        let pid = pid_of(&primary);
        cluster.stop();
        assert!(!alive(pid));
        cluster.stop();
        let err = cluster.psql(&primary, "postgres", "SELECT 1").unwrap_err();
        assert!(format!("{err:#}").contains("psql"), "{err:#}");
    }
}
