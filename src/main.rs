//! The `pgsplit` command line: run the proxy, check a config, or start a demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgsplit::config::Config;
use pgsplit::proxy::Proxy;

#[derive(Parser)]
#[command(
    version,
    about = "PostgreSQL pooling proxy that splits reads from writes"
)]
struct Cli {
    /// Config file to run the proxy with.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and exit.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start a throwaway primary + 2 replicas and the proxy in front of them.
    Demo {
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGSPLIT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => check(&config),
        (Some(Command::Demo { listen }), _) => {
            runtime().and_then(|rt| rt.block_on(pgsplit::demo::run(&listen, shutdown_signal())))
        }
        (None, Some(config)) => run(&config),
        (None, None) => Err(anyhow::anyhow!(
            "no config given: run `pgsplit --config FILE`, or `pgsplit demo` to try it out"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgsplit: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    println!(
        "{}: ok ({} nodes, {} users, {:?} pooling)",
        path.display(),
        config.nodes.len(),
        config.users.len(),
        config.pool.mode
    );
    Ok(())
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    runtime()?.block_on(async {
        let proxy = Proxy::bind(config).await?;
        tracing::info!(address = %proxy.local_addr()?, "pgsplit listening");
        proxy.run(shutdown_signal()).await
    })
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
