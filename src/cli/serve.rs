//! `packbox serve`: the executor as an HTTP service (see the README's "Run as a service").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use packbox::{Catalog, Environment, Settings};
use tokio_util::sync::CancellationToken;

use super::options::{self, GlobalArgs, SandboxArgs};
use super::{EXIT_ENGINE, EXIT_INPUT, render, signals};
use crate::serve;

/// Arguments of `packbox serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (default 127.0.0.1:8080; $PACKBOX_SERVE_LISTEN). Anything
    /// but loopback needs a token.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Folder holding the packs the server runs ($PACKBOX_PACKS).
    #[arg(long, value_name = "DIR")]
    packs: Option<PathBuf>,
    /// File of API tokens, one NAME:TOKEN per line ($PACKBOX_SERVE_TOKEN_FILE; a single token
    /// can also come from $PACKBOX_SERVE_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// Runs the server until SIGTERM or Ctrl-C, then stops it gracefully.
pub async fn execute(args: ServeArgs, global: &GlobalArgs) -> ExitCode {
    let mut layer = options::layer(global, &args.sandbox);
    layer.serve.listen = args.listen;
    layer.serve.packs = args.packs;
    layer.serve.token_file = args.token_file;
    let settings = match Settings::resolve(layer, global.config.as_deref(), &Environment::capture())
    {
        Ok(settings) => settings,
        Err(e) => return render::report(&packbox::Error::from(e), false),
    };
    let catalog = match Catalog::load(settings.catalog_dir.as_deref()) {
        Ok(catalog) => catalog,
        Err(e) => return render::report(&packbox::Error::from(e), false),
    };
    let stop = CancellationToken::new();
    signals::cancel_on_signal(stop.clone(), "stopping the server");
    match serve::run(settings, catalog, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", packbox::error_chain(&e));
            ExitCode::from(if e.is_input() {
                EXIT_INPUT
            } else {
                EXIT_ENGINE
            })
        }
    }
}
