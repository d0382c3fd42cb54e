//! `pf`: push, pull, inspect and copy ProcessFork snapshots (the command is
//! in the `pf_cli` library).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pf_cli::main()
}
