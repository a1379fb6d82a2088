//! Command-line layer: each subcommand parses, makes about one library call, renders, and maps
//! the result to an exit code. Data goes to stdout, everything else to stderr.

pub mod actions;
mod build;
mod client;
mod client_http;
mod config;
mod doctor;
mod envs;
mod explain;
mod gc;
mod images;
mod keys;
mod options;
mod pack;
mod render;
mod run;
mod runtimes;
mod serve;
mod signals;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use options::GlobalArgs;

/// Exit code for invalid input (a pack, a parameter, a flag).
pub const EXIT_INPUT: u8 = 2;
/// Exit code for an action packbox does not run: an Attune workflow.
pub const EXIT_UNSUPPORTED: u8 = 3;
/// Exit code when packbox or the engine could not do the work.
pub const EXIT_ENGINE: u8 = 125;
/// Exit code when packbox was interrupted a second time and exits at once.
pub const EXIT_CANCELLED: u8 = 130;

/// Run automation actions in sandboxed, throw-away Docker containers.
#[derive(Debug, Parser)]
#[command(name = "packbox", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    /// What to log on stderr: error, warn, info, debug, trace, or a tracing filter such as
    /// `packbox=debug` (debug makes a run explain its decisions).
    #[arg(
        long,
        global = true,
        env = "PACKBOX_LOG",
        value_name = "FILTER",
        default_value = "warn"
    )]
    log: String,
    /// How log lines look: text for people, json (one object per line) for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one action of a pack in a fresh, locked-down container.
    Run(Box<run::RunArgs>),
    /// Build the environment images of packs ahead of time.
    Build(build::BuildArgs),
    /// List or prune environment images.
    #[command(subcommand)]
    Envs(envs::EnvsCommand),
    /// Manage the runtime images (packbox/python:3.11, ...).
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Check packs without running anything.
    #[command(subcommand)]
    Pack(pack::PackCommand),
    /// List the actions of packs.
    #[command(subcommand)]
    Actions(actions::ActionsCommand),
    /// Remove containers left behind by packbox processes that are gone.
    Gc(gc::GcArgs),
    /// Verify which runtime versions the images hold, or list what is known.
    #[command(subcommand)]
    Runtimes(runtimes::RuntimesCommand),
    /// Show the settings packbox would run with, and where each came from.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Serve API v1 over HTTP: executions recorded, queued, run on a warm pool.
    Serve(Box<serve::ServeArgs>),
    /// Check what runs need (engine, TLS, images, state folder) and say what to fix.
    Doctor(doctor::DoctorArgs),
    /// Show the decision a run would take (runtime, version, environment) without running it.
    Explain(explain::ExplainArgs),
    /// Run a pack's tests (its Attune `testing` section) in the sandbox its actions get.
    Test(test::TestArgs),
    /// Manage the key store: keys injected into runs, sealed under a key-encryption key.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_INPUT),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ENGINE);
        }
    };
    if let Err(message) = init_logging(&cli.log, cli.log_format) {
        eprintln!("error: --log / PACKBOX_LOG: {message}");
        return ExitCode::from(EXIT_INPUT);
    }
    let global = &cli.global;
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::execute(*args, global).await,
            Command::Images(command) => images::execute(command, global).await,
            Command::Pack(command) => pack::execute(command, global),
            Command::Actions(command) => actions::execute(command, global),
            Command::Build(args) => build::execute(args, global).await,
            Command::Envs(command) => envs::execute(command, global).await,
            Command::Gc(args) => gc::execute(args, global).await,
            Command::Runtimes(command) => runtimes::execute(command, global).await,
            Command::Config(command) => config::execute(command, global),
            Command::Serve(args) => serve::execute(*args, global).await,
            Command::Doctor(args) => doctor::execute(args, global).await,
            Command::Test(args) => test::execute(args, global).await,
            Command::Explain(args) => explain::execute(args, global).await,
            Command::Keys(command) => keys::execute(command, global),
        }
    })
}

/// The crate whose log lines repeat an error packbox reports itself.
const QUIET_TLS_VERIFIER: &str = "rustls_platform_verifier";

/// The engine client's log target, whose debug and trace lines print request bodies (a Swarm
/// secret's data included): capped at info whatever the filter says.
const REQUEST_BODY_LOGGER: &str = packbox::ENGINE_CLIENT_LOG_TARGET;

/// Logs to stderr, filtered by `filter`, as text or JSON lines. No filter can show a request
/// body: the engine client's debug lines are cut before any filter sees them.
fn init_logging(filter: &str, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The TLS verifier of `run --server` logs an ERROR line of its own for the certificate
    // failure packbox reports with the server's name and what to set: one message is enough,
    // unless the filter asks for that crate by name.
    let filter = if filter.contains(QUIET_TLS_VERIFIER) {
        filter.to_string()
    } else {
        format!("{filter},{QUIET_TLS_VERIFIER}=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let no_request_bodies = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with(REQUEST_BODY_LOGGER) && *meta.level() > tracing::Level::INFO)
    });
    let filter = filter.and(no_request_bodies);
    // Colours only for a terminal: logs of a service go to files and collectors.
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(lines)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(())
}
