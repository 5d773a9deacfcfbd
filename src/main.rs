//! The `tapedeck` command: `serve` (the default) and `check`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tapedeck::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "tapedeck",
    version,
    about = "Self-hosted video stream ingest and archive server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (what bare `tapedeck` does).
    Serve {
        /// Print the effective configuration as TOML and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Verify the index against the fragment files; with --repair, fix what is wrong.
    /// Exit status 1 when problems remain.
    Check {
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "TAPEDECK_LISTEN", global = true)]
    listen: Option<String>,
    /// Directory for the index and fragment files.
    #[arg(long, env = "TAPEDECK_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "TAPEDECK_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log filter (RUST_LOG syntax), e.g. "info" or "tapedeck=debug".
    #[arg(long, env = "TAPEDECK_LOG", global = true)]
    log: Option<String>,
    /// Serve without API keys on a non-loopback address (same as `auth.insecure = true`).
    #[arg(long, global = true)]
    insecure: bool,
}

fn load_config(common: &Common) -> Result<Config, String> {
    let overrides = Overrides {
        listen: common.listen.clone(),
        data_dir: common.data_dir.clone(),
        log: common.log.clone(),
    };
    let mut config = Config::load(common.config.as_deref(), &overrides).map_err(|e| e.message)?;
    config.auth.insecure |= common.insecure;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Fragment buffers (hundreds of KB each, one per camera, freed about once a second) from
/// memory the allocator gives back when they are freed. glibc raises its mmap threshold after
/// the first such free, and from then on serves them from its heap arenas, where a thousand
/// cameras' buffers, freed out of order on many threads, leave holes it never returns: RSS
/// measured 727 MB that way against 300 MB with the threshold fixed (BENCHMARKS.md, issue 15).
/// The price: each frame decode's openh264 buffers are fresh mappings too, about 10 ms more per
/// 1080p decode (`codec/openh264.rs`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_returnable() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_returnable() {}

fn main() -> ExitCode {
    keep_large_buffers_returnable();
    let cli = Cli::parse();
    let config = match load_config(&cli.common) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tapedeck: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve {
        print_config: false,
    }) {
        Command::Serve { print_config: true } => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Serve {
            print_config: false,
        } => {
            init_logging(&config);
            serve(config)
        }
        Command::Check { repair, json } => {
            init_logging(&config);
            check(&config, repair, json)
        }
    }
}

fn serve(config: Config) -> ExitCode {
    if let Err(e) = tapedeck::http::auth::check_exposure(&config) {
        eprintln!("tapedeck: {}", e.message);
        return ExitCode::from(2);
    }
    if config.auth.keys.is_empty() && config.auth.insecure {
        tracing::warn!(listen = %config.listen, "--insecure: serving without authentication");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tapedeck: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        tapedeck::http::serve(config, Arc::new(tapedeck::clock::SystemClock), shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapedeck: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM starts a clean shutdown.
async fn wait_for_signal(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

fn check(config: &Config, repair: bool, json: bool) -> ExitCode {
    match tapedeck::store::check_with(&config.data_dir, &config.storage, repair) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!(
                    "checked {} fragments in {} files under {}",
                    report.fragments_checked,
                    report.files_checked,
                    config.data_dir.display()
                );
                for p in &report.problems {
                    println!("problem: {p}");
                }
                for n in &report.notes {
                    println!("note: {n}");
                }
                for r in &report.repaired {
                    println!("repaired: {r}");
                }
                if report.is_clean() {
                    println!("ok: index and files agree");
                }
            }
            if report.is_clean() || repair {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tapedeck check: {}", e.message);
            ExitCode::from(2)
        }
    }
}
