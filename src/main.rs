//! The `pgsplit` command line: run the proxy, check a config, or start a demo.
//!
//! The configuration comes from `--config FILE`, else `$PGSPLIT_CONFIG`,
//! else `DB_*` variables; `PGSPLIT_*` variables override any of them.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgsplit::config::{Config, LogFormat, Variables};
use pgsplit::proxy::Proxy;

#[derive(Parser)]
#[command(
    version,
    about = "PostgreSQL pooling proxy that splits reads from writes"
)]
struct Cli {
    /// Config file to run the proxy with (default: $PGSPLIT_CONFIG, else
    /// DB_HOST and friends).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, print it as pgsplit sees it (secrets
    /// redacted) and exit.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Start a throwaway primary + 2 replicas and the proxy in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let vars: Variables = std::env::vars().collect();
    let result = match cli.command {
        Some(Command::Check { config }) => check(config.or(cli.config), &vars),
        Some(Command::Demo { listen }) => {
            init_logging(LogFormat::Text);
            runtime().and_then(|rt| rt.block_on(pgsplit::demo::run(&listen, shutdown_signal())))
        }
        None => run(cli.config, &vars),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgsplit: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration from the file given, `$PGSPLIT_CONFIG`, or the environment.
fn load(path: Option<PathBuf>, vars: &Variables) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let path = path.or_else(|| vars.get("PGSPLIT_CONFIG").map(PathBuf::from));
    let config = Config::load_layered(path.as_deref(), vars)?;
    Ok((config, path))
}

/// Where the configuration came from, for messages.
fn describe(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => path.display().to_string(),
        None => "the environment".to_owned(),
    }
}

fn check(path: Option<PathBuf>, vars: &Variables) -> anyhow::Result<()> {
    let (config, path) = load(path, vars)?;
    println!("{}", serde_json::to_string_pretty(&config.redacted())?);
    eprintln!(
        "{}: ok ({} nodes, {} users, {:?} pooling)",
        describe(&path),
        config.nodes.len(),
        config.users.len(),
        config.pool.mode
    );
    Ok(())
}

fn run(path: Option<PathBuf>, vars: &Variables) -> anyhow::Result<()> {
    let (config, path) = load(path, vars)?;
    init_logging(config.log.format);
    tracing::info!(config = %describe(&path), "configuration loaded");
    runtime()?.block_on(async {
        let proxy = Proxy::bind_with_source(config, path).await?;
        tracing::info!(address = %proxy.local_addr()?, "pgsplit listening");
        proxy.run(shutdown_signal()).await
    })
}

/// Logs to stderr at the level `PGSPLIT_LOG` gives (default `info`), with
/// colours only on a terminal (not into files, journald or `docker logs`).
/// JSON lines carry the event's parent span as `span` and no `spans` list:
/// sessions name their span as the parent instead of entering it, so the
/// list of entered spans would always be empty.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSPLIT_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_span_list(false).init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
