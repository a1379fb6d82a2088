//! `packbox keys`: the key store of the state folder, changed from the command line (the same
//! store `packbox serve` injects from and `packbox run` uses locally). Values are read from
//! stdin, never from arguments (which other users can see in the process list), and never
//! printed.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use packbox::{KeyEncryptionKey, KeyScope, KeyStore, KeyStoreError, Settings};
use serde_json::{Value, json};

use super::options::{self, GlobalArgs};
use super::{EXIT_ENGINE, EXIT_INPUT, render};

/// The largest value read from stdin.
const MAX_VALUE_BYTES: u64 = 64 << 10;

/// Subcommands of `packbox keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Set a key, its value read from stdin (one final newline removed).
    Set {
        /// system, pack:<ref> or action:<pack.action>.
        scope: String,
        /// The key's name, as actions see it in their parameters.
        name: String,
        /// Read stdin as a JSON value (an object, a number, ...) instead of text.
        #[arg(long)]
        json_value: bool,
    },
    /// List the keys by scope and name (never their values).
    List {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key.
    Rm {
        /// system, pack:<ref> or action:<pack.action>.
        scope: String,
        /// The key's name.
        name: String,
    },
    /// Seal every value again under a new key-encryption key; the old key no longer opens the
    /// store. Point keystore.key_file (or PACKBOX_KEY_FILE) at the new file afterwards, and
    /// restart a server that uses the store.
    Rotate {
        /// The new key-encryption key (make it with `packbox keys generate-kek FILE`).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Write a new random key-encryption key to FILE (mode 0600; never inside the state
    /// folder, never over an existing file).
    GenerateKek {
        /// Where to write it.
        file: PathBuf,
    },
}

/// Why a key command failed: the input (exit 2) or the store or machine (125).
struct Failure {
    message: String,
    input: bool,
}

impl From<KeyStoreError> for Failure {
    fn from(error: KeyStoreError) -> Failure {
        Failure {
            input: error.is_input(),
            message: packbox::error_chain(&error),
        }
    }
}

/// Runs one `packbox keys` subcommand.
pub fn execute(command: KeysCommand, global: &GlobalArgs) -> ExitCode {
    let settings = match options::resolve(global) {
        Ok(settings) => settings,
        Err(error) => return render::report(&packbox::Error::from(error), false),
    };
    match run(command, &settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", render::sanitize(&failure.message));
            ExitCode::from(if failure.input {
                EXIT_INPUT
            } else {
                EXIT_ENGINE
            })
        }
    }
}

fn run(command: KeysCommand, settings: &Settings) -> Result<(), Failure> {
    let state_dir = settings.state_dir.as_path();
    let open = || KeyStore::open(state_dir, settings.keystore.key_file.as_deref());
    match command {
        KeysCommand::GenerateKek { file } => {
            KeyEncryptionKey::generate(&file, state_dir).map_err(KeyStoreError::from)?;
            eprintln!(
                "wrote a new key-encryption key to {}; keep it outside the state folder and point keystore.key_file (or PACKBOX_KEY_FILE) at it",
                file.display()
            );
        }
        KeysCommand::Set {
            scope,
            name,
            json_value,
        } => {
            let scope = KeyScope::parse(&scope)?;
            packbox::check_key_name(&name)?;
            let store = open()?;
            if !store.is_open() {
                return Err(KeyStoreError::NoKey.into());
            }
            let value = read_value(json_value)?;
            store.set(&scope, &name, &value, &who())?;
            eprintln!("set key `{name}` at scope {scope}");
        }
        KeysCommand::Rm { scope, name } => {
            let scope = KeyScope::parse(&scope)?;
            open()?.remove(&scope, &name, &who())?;
            eprintln!("removed key `{name}` at scope {scope}");
        }
        KeysCommand::List { json } => {
            let store = open()?;
            if !store.is_open() {
                eprintln!("note: {}", KeyStoreError::NoKey);
            }
            let keys = store.list()?;
            if json {
                println!("{}", json!({"keys": keys, "writable": store.is_open()}));
            } else {
                for key in keys {
                    println!(
                        "{}\t{}\t{}\t{}",
                        key.scope, key.name, key.updated_at, key.updated_by
                    );
                }
            }
        }
        KeysCommand::Rotate { new_key_file } => {
            let store = open()?;
            let new =
                KeyEncryptionKey::load(&new_key_file, state_dir).map_err(KeyStoreError::from)?;
            let count = store.rotate(new, &who())?;
            eprintln!(
                "sealed {count} keys again under {}; point keystore.key_file (or PACKBOX_KEY_FILE) at it and restart servers using this state folder",
                new_key_file.display()
            );
        }
    }
    Ok(())
}

/// The value on stdin: text (one final newline removed), or JSON with `--json-value`.
fn read_value(json_value: bool) -> Result<Value, Failure> {
    let input = |message: &str| Failure {
        message: message.to_string(),
        input: true,
    };
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading the value from stdin (end with Ctrl-D)");
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(MAX_VALUE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| input(&format!("cannot read the value from stdin: {e}")))?;
    if bytes.len() as u64 > MAX_VALUE_BYTES {
        return Err(input(&format!(
            "the value on stdin is larger than {MAX_VALUE_BYTES} bytes"
        )));
    }
    let mut text =
        String::from_utf8(bytes).map_err(|_| input("the value on stdin is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(input(
            "no value on stdin (echo VALUE | packbox keys set SCOPE NAME)",
        ));
    }
    if json_value {
        // serde's message may quote the value: say only what was expected.
        return serde_json::from_str(&text)
            .map_err(|_| input("--json-value: the value on stdin is not JSON"));
    }
    Ok(Value::String(text))
}

/// Who the command line is, for the audit trail.
fn who() -> String {
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    format!("cli:uid={uid}")
}
