//! The `photosync` binary: parse the command line, set up logging, run, and
//! map the outcome to the documented exit codes. The only `process::exit`.

mod cli;

use std::io::IsTerminal as _;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cli.default_log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(cli::log_writer)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let code = match cli::run(cli) {
        Ok(exit) => exit,
        // A reader that went away (`photosync jobs | head`) is not an error.
        Err(error) if is_broken_pipe(&error) => cli::Exit::Done,
        Err(error) => {
            eprintln!("photosync: {}", cli::printable_lines(&format!("{error:#}")));
            cli::exit_for(&error)
        }
    };
    std::process::exit(code as i32);
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
