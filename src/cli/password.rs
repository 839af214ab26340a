//! `photosync password`: keep a destination's password (or Immich API key)
//! in the operating system's keyring, for destinations configured with
//! `password_keyring` (`api_key_keyring`).

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::Context as _;

use super::output::printable;
use super::{Exit, UsageError};
use photosync::config::Config;
use photosync::secrets;

/// Arguments of `photosync password`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Store the password of a destination: typed at the terminal (not
    /// shown), or the first line of standard input.
    Set {
        /// The destination's `name` in the config.
        name: String,
    },
    /// Remove a destination's password from the keyring.
    Forget {
        /// The destination's `name` in the config.
        name: String,
    },
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    match &args.action {
        Action::Set { name } => {
            let account = account(config, name)?;
            let password = read_password(name)?;
            secrets::store(account, &password)?;
            println!(
                "Stored the password of {} in the keyring (service {}, account {}).",
                printable(name),
                secrets::SERVICE,
                printable(account)
            );
        }
        Action::Forget { name } => {
            let account = account(config, name)?;
            if secrets::forget(account)? {
                println!("Removed the password of {} from the keyring.", printable(name));
            } else {
                println!("The keyring held no password for {}.", printable(name));
            }
        }
    }
    Ok(Exit::Done)
}

/// The keyring account of the destination called `name`.
fn account<'a>(config: &'a Config, name: &str) -> anyhow::Result<&'a str> {
    let destination = config.destinations.iter().find(|d| d.name == name).ok_or_else(|| {
        let names: Vec<String> = config.destinations.iter().map(|d| printable(&d.name).into_owned()).collect();
        UsageError(format!("no destination is called {}; the config has: {}", printable(name), names.join(", ")))
    })?;
    destination.kind.keyring_account().ok_or_else(|| {
        UsageError(format!(
            "destination {} does not take its password from the keyring; add password_keyring = \"ACCOUNT\" \
             (api_key_keyring for Immich) to it",
            printable(name)
        ))
        .into()
    })
}

/// The password, from the terminal without echo or from standard input.
fn read_password(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        eprint!("Password for {}: ", printable(name));
        std::io::stderr().flush().ok();
        let line = without_echo(|| {
            let mut line = String::new();
            stdin.lock().read_line(&mut line).map(|_| line)
        })
        .context("cannot read the password from the terminal")?;
        eprintln!();
        line
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).context("cannot read the password from standard input")?;
        line
    };
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(UsageError("the password is empty; nothing was stored".into()).into());
    }
    Ok(password)
}

/// Runs `read` with the terminal on standard input not echoing, and puts
/// the echo back afterwards whatever happened.
fn without_echo<T>(read: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let before = tcgetattr(&stdin)?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let result = read();
    tcsetattr(&stdin, OptionalActions::Now, &before)?;
    result
}
