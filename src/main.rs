//! The `packbox` command: parses arguments, calls the library, renders the result.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
