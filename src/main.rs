//! The `punie` binary: sets the allocator, then hands over to [`punie::cli`],
//! which parses the command line.

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc, in which the server spent about 15 %
/// of its CPU under load (freeing, consolidating and unlinking chunks); with
/// it, a turn takes a sixth less CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    punie::cli::main()
}
