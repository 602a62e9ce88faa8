//! `roomcontrol`: read the configuration, start telemetry, run until stopped.

use std::process::ExitCode;

use clap::Parser;
use roomcontrol::cli::{self, Cli, Command};
use roomcontrol::config::{Config, ConfigFile};
use roomcontrol::{Application, shutdown, telemetry};

/// mimalloc: the many small, short-lived allocations of a call (headers,
/// messages, futures) cost less than with glibc's malloc, and memory under
/// load stays lower; docs/benchmarks.md has the figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ApiKey(args)) = cli.command {
        // Needs no configuration.
        return match cli::api_key(args) {
            Ok(output) => print(&output),
            Err(error) => {
                eprintln!("roomcontrol: {error}");
                ExitCode::from(2)
            }
        };
    }
    // Before any thread starts: `.env` fills in variables not already set.
    if let Err(error) = load_dot_env() {
        eprintln!("roomcontrol: {error}");
        return ExitCode::from(2);
    }
    let file = cli.config.map_or(ConfigFile::Default, ConfigFile::Explicit);
    let config = match Config::load(&file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("roomcontrol: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Config => print(&config.to_redacted_json()),
        Command::ApiKey(_) => unreachable!("handled before the configuration is read"),
        Command::History(cli::HistoryCommand::Export(args)) => history_export(&config, args),
        Command::Token(args) => match cli::token(&config, args) {
            Ok(output) => print(&output),
            Err(error) => {
                eprintln!("roomcontrol: {error}");
                ExitCode::from(2)
            }
        },
    }
}

/// `roomcontrol history export`, on a runtime of its own, straight to
/// standard output.
fn history_export(config: &Config, args: cli::ExportArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("roomcontrol: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = runtime.block_on(cli::history_export(config, args, &mut out));
    match result.and_then(|()| std::io::Write::flush(&mut out).map_err(|error| error.to_string())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("roomcontrol: {error}");
            ExitCode::from(2)
        }
    }
}

/// Prints command output; a closed pipe (`| head`) is not an error.
fn print(output: &str) -> ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{output}");
    ExitCode::SUCCESS
}

fn serve(config: Config) -> ExitCode {
    // Every connection costs a file descriptor, and a soft limit of 1,024
    // (common in containers) is far below server.max_connections: raise it
    // to the hard limit, once, before any thread or socket exists. The main
    // port's cap is then set from what it allows (server::accept).
    let open_files = rlimit::increase_nofile_limit(u64::MAX);
    telemetry::init(&config.log);
    match open_files {
        Ok(limit) => tracing::info!(
            open_files_limit = limit,
            "open-file limit: {limit} (the soft limit, raised as far as the hard limit allows)"
        ),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit; keeping the one the process started with")
        }
    }
    // On one thread, the single-threaded runtime: no work stealing, no
    // cross-thread wake-ups, and tasks run in the order they were woken, so a
    // connection writes the replies of all the calls that finished together
    // at once. On one core it serves about 40% more calls per second than a
    // multi-threaded runtime with one worker (docs/benchmarks.md).
    let threads = config.server.worker_threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match Application::build(config).await {
            Ok(application) => {
                application.run_until_stopped(shutdown::signal()).await;
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!("cannot start: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Reads `.env` from the working directory, if there is one. Parse errors
/// name the line, never its text, which may hold a secret.
fn load_dot_env() -> Result<(), String> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(error) if error.not_found() => Ok(()),
        Err(dotenvy::Error::LineParse(_, index)) => {
            Err(format!(".env: cannot parse it at byte {index} (expected KEY=VALUE lines)"))
        }
        Err(dotenvy::Error::Io(error)) => Err(format!(".env: cannot read it: {error}")),
        Err(_) => Err(".env: cannot read it".to_owned()),
    }
}
