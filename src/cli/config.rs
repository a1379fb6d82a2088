//! `packbox config show`: every setting, its value and where it came from.

use std::process::ExitCode;

use clap::Subcommand;
use packbox::{Error, Source};

use super::options::{self, GlobalArgs};
use super::render;

/// Subcommands of `packbox config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its value and its source (flag, file, env or default).
    Show {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Resolves the settings and prints them.
pub fn execute(command: ConfigCommand, global: &GlobalArgs) -> ExitCode {
    let ConfigCommand::Show { json } = command;
    let settings = match options::resolve(global) {
        Ok(settings) => settings,
        Err(error) => return render::report(&Error::from(error), json),
    };
    if json {
        let shown: serde_json::Map<String, serde_json::Value> = settings
            .shown()
            .iter()
            .map(|s| {
                (
                    s.key.to_string(),
                    serde_json::json!({"value": s.value, "source": s.source}),
                )
            })
            .collect();
        let object = serde_json::json!({
            "config_file": settings.config_file,
            "settings": shown,
        });
        println!("{object}");
        return ExitCode::SUCCESS;
    }
    match &settings.config_file {
        Some(file) => println!("# config file: {}", file.display()),
        None => println!("# config file: none"),
    }
    let width = settings
        .shown()
        .iter()
        .map(|s| s.key.len())
        .max()
        .unwrap_or(0);
    for setting in settings.shown() {
        let value = match &setting.value {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let source = match setting.source {
            Source::Flag => "flag",
            Source::File => "file",
            Source::Env => "env",
            Source::Default => "default",
        };
        println!(
            "{:<width$}  {:<7}  {}",
            setting.key,
            source,
            render::sanitize(&value)
        );
    }
    ExitCode::SUCCESS
}
