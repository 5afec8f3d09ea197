//! The `langadapt` binary: parse flags, run the stage, print the error chain; exit 0 ok, 1 check failed, 2 error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    langadapt::alloc::tune_allocator();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (e.g. `| head`) is not an error worth reporting.
            let broken_pipe = |e: &(dyn std::error::Error + 'static)| {
                e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            };
            if err.chain().any(broken_pipe) {
                return ExitCode::SUCCESS;
            }
            if let Some(failed) = err.downcast_ref::<cli::CheckFailed>() {
                eprintln!("{failed}");
                return ExitCode::from(1);
            }
            eprintln!("error: {}", langadapt::error::render_chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}
