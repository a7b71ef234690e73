//! The `punie` binary: parses the command line and hands over to [`punie::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    punie::cli::main()
}
