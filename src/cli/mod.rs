//! The `photosync` command line: clap definitions, one file per subcommand,
//! and the exit-code table. Uses `anyhow` (this is the edge of the program);
//! `main` turns what [`run`] returns into the process exit status.

mod auth;
mod backup;
mod control;
mod daemon;
mod init;
mod jobs;
mod manual;
mod output;
mod password;
mod pause;
mod resume;
mod retry;
mod scan;
mod status;
mod verify;
mod why;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use photosync::catalog::CatalogError;
use photosync::config::{Config, ConfigError};
use photosync::ipc::client::ClientError;
use photosync::ipc::protocol::ErrorCode;

pub use output::{log_writer, printable_lines};

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything found is uploaded and acknowledged.
    Done = 0,
    /// Some jobs failed permanently (or files could not be read).
    Failed = 1,
    /// Usage or configuration error.
    Usage = 2,
    /// The daemon is not running or not reachable (control commands).
    NotRunning = 3,
    /// Work remains for a later run: held by policy, waiting for a retry,
    /// or another process is using the catalog. Nothing failed.
    Deferred = 75,
    /// Interrupted by a signal.
    Interrupted = 130,
}

const EXIT_CODES: &str = "\
Exit codes:
  0    done: everything found is uploaded and acknowledged
  1    some jobs failed permanently or files could not be read (listed in the summary);
       verify: something is missing or corrupt at a destination
  2    usage or configuration error
  3    the daemon is not running or not reachable (status, pause, resume, scan)
  75   deferred: work remains for a later run (destination unavailable, retries
       waiting, another photosync using the catalog); nothing failed
  130  interrupted";

/// Back up photo and video folders to a folder, NAS or object storage, with a
/// durable upload queue that survives crashes and retries failures.
#[derive(Debug, Parser)]
#[command(name = "photosync", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file [default: ~/.config/photosync/config.toml]
    #[arg(long, global = true, env = "PHOTOSYNC_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a starter config for one source folder and one destination folder.
    Init(init::Args),
    /// Scan the sources and upload everything new, then exit (for cron and
    /// scripts). With a daemon running, asks it to do so and waits.
    Backup(backup::Args),
    /// Run in the foreground: watch the sources and upload as photos arrive.
    Daemon(daemon::Args),
    /// Show what the daemon is doing, and why not more.
    Status(status::Args),
    /// Pause uploads (in-flight ones stop cleanly and keep their progress).
    Pause(pause::Args),
    /// Resume uploads after `pause`.
    Resume(resume::Args),
    /// Have the daemon scan every source now.
    Scan(scan::Args),
    /// List upload jobs.
    Jobs(jobs::Args),
    /// Queue failed or retry-waiting jobs again, now.
    Retry(retry::Args),
    /// Prove that every uploaded file is still at its destination, intact
    /// (with --repair, upload again what is not).
    Verify(verify::Args),
    /// Keep a destination's password in the system keyring (Secret Service,
    /// macOS Keychain).
    Password(password::Args),
    /// Sign in to a destination's cloud service (Dropbox, OneDrive, Google
    /// Photos) once; or see (--status) or remove (--forget) the sign-in.
    Auth(auth::Args),
    /// Say whether files are backed up, waiting, or left out, and why.
    Why(why::Args),
    /// Print the completion script for a shell (bash, zsh, fish, elvish,
    /// powershell).
    Completions(manual::Args),
    /// Print the manual page (roff), for packages.
    #[command(hide = true)]
    Man,
}

impl Cli {
    /// The log filter when `RUST_LOG` is not set: warnings for commands, and
    /// what the daemon does for `daemon` (its log is the service journal).
    pub fn default_log_filter(&self) -> &'static str {
        let daemon = matches!(self.command, Command::Daemon(_));
        match (self.verbose, daemon) {
            (0, false) => "warn",
            (0, true) | (1, _) => "photosync=info,warn",
            _ => "photosync=debug,info",
        }
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let config_path = match (cli.config, &cli.command) {
        // They describe the command line itself: no config to find.
        (_, Command::Completions(_) | Command::Man) => PathBuf::new(),
        (Some(path), _) => path,
        (None, _) => Config::default_path()?,
    };
    match cli.command {
        Command::Init(args) => init::run(&config_path, &args),
        Command::Backup(args) => backup::run(&Config::load(&config_path)?, &args),
        Command::Daemon(args) => daemon::run(&config_path, Config::load(&config_path)?, &args),
        Command::Status(args) => status::run(&Config::load(&config_path)?, &args),
        Command::Pause(args) => pause::run(&Config::load(&config_path)?, &args),
        Command::Resume(args) => resume::run(&Config::load(&config_path)?, &args),
        Command::Scan(args) => scan::run(&Config::load(&config_path)?, &args),
        Command::Jobs(args) => jobs::run(&Config::load(&config_path)?, &args),
        Command::Retry(args) => retry::run(&Config::load(&config_path)?, &args),
        Command::Verify(args) => verify::run(&Config::load(&config_path)?, &args),
        Command::Why(args) => why::run(&Config::load(&config_path)?, &args),
        Command::Password(args) => password::run(&Config::load(&config_path)?, &args),
        Command::Auth(args) => auth::run(&Config::load(&config_path)?, &args),
        Command::Completions(args) => manual::completions(&args),
        Command::Man => manual::man(),
    }
}

/// The exit code for an error that ended the command.
pub fn exit_for(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if cause.is::<ConfigError>() || cause.is::<UsageError>() {
            return Exit::Usage;
        }
        if let Some(photosync::Error::Config(_)) = cause.downcast_ref::<photosync::Error>() {
            return Exit::Usage;
        }
        if let Some(e) = cause.downcast_ref::<photosync::Error>()
            && e.retryable()
        {
            return Exit::Deferred;
        }
        if let Some(CatalogError::Locked { .. } | CatalogError::Outdated { .. } | CatalogError::Busy) =
            cause.downcast_ref::<CatalogError>()
        {
            return Exit::Deferred;
        }
        match cause.downcast_ref::<ClientError>() {
            Some(ClientError::NotRunning(_) | ClientError::NotReachable { .. }) => return Exit::NotRunning,
            Some(ClientError::Refused(e)) if e.code == ErrorCode::Unavailable => return Exit::Deferred,
            Some(ClientError::Refused(e)) if e.code == ErrorCode::Invalid => return Exit::Usage,
            _ => {}
        }
    }
    Exit::Failed
}

/// A mistake in how the command was called that clap cannot see.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
