//! The `packbox` command: parses arguments, calls the library, renders the result.

mod cli;
mod serve;

fn main() -> std::process::ExitCode {
    cli::main()
}
