//! The `packbox` command: parses arguments, calls the library, renders the result.

mod cli;
#[allow(dead_code)] // the HTTP layer that uses the record store comes next
mod serve;

fn main() -> std::process::ExitCode {
    cli::main()
}
