//! Command-line layer: each subcommand parses, makes about one library call, renders, and maps
//! the result to an exit code. Data goes to stdout, everything else to stderr.

mod actions;
mod build;
mod doctor;
mod envs;
mod gc;
mod images;
mod pack;
mod render;
mod run;
mod runtimes;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for invalid input (a pack, a parameter, a flag).
pub const EXIT_INPUT: u8 = 2;
/// Exit code when packbox or the engine could not do the work.
pub const EXIT_ENGINE: u8 = 125;
/// Exit code when packbox was interrupted a second time and exits at once.
pub const EXIT_CANCELLED: u8 = 130;

/// Run automation actions in sandboxed, throw-away Docker containers.
#[derive(Debug, Parser)]
#[command(name = "packbox", version, about)]
struct Cli {
    /// A folder of runtime definitions (*.yaml) that extend or replace the built-in catalog.
    #[arg(long, global = true, env = "PACKBOX_CATALOG", value_name = "DIR")]
    catalog: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
    /// Check what runs need (engine, TLS, images, state folder) and say what to fix.
    Doctor(doctor::DoctorArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    init_logging();
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
    let catalog = cli.catalog.as_deref();
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::execute(*args, catalog).await,
            Command::Images(command) => images::execute(command, catalog).await,
            Command::Pack(command) => pack::execute(command, catalog),
            Command::Actions(command) => actions::execute(command, catalog),
            Command::Build(args) => build::execute(args, catalog).await,
            Command::Envs(command) => envs::execute(command).await,
            Command::Gc(args) => gc::execute(args).await,
            Command::Runtimes(command) => runtimes::execute(command, catalog).await,
            Command::Doctor(args) => doctor::execute(args, catalog).await,
        }
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PACKBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
