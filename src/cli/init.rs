//! `photosync init`: write a commented starter config.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::output::printable;
use super::{Exit, UsageError};
use photosync::config::{self, Config, Power, Starter};
use photosync::policy::Rule;

/// Arguments of `photosync init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The photo folder to back up.
    #[arg(long, value_name = "DIR")]
    source: PathBuf,
    /// The folder to copy photos into (created if missing).
    #[arg(long, value_name = "DIR")]
    destination: PathBuf,
    /// Upload on battery or wait for the charger (default: wait on a machine
    /// with a battery, upload on one without).
    #[arg(long, value_name = "RULE")]
    on_battery: Option<OnBattery>,
    /// Where the catalog lives (default: the per-user data directory).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Replace an existing config file.
    #[arg(long)]
    force: bool,
    /// Where to look for a battery (Linux; for tests).
    #[arg(long, hide = true, value_name = "DIR", default_value = "/sys/class/power_supply")]
    power_supply_dir: PathBuf,
}

/// `--on-battery`'s values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnBattery {
    /// Wait while the machine runs on battery.
    Hold,
    /// Upload on battery too.
    Allow,
}

pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<Exit> {
    if config_path.exists() && !args.force {
        return Err(UsageError(format!("{} already exists; pass --force to replace it", config_path.display())).into());
    }
    let source = std::fs::canonicalize(&args.source)
        .map_err(|e| UsageError(format!("source folder {}: {e}", args.source.display())))?;
    if !source.is_dir() {
        return Err(UsageError(format!("source {} is not a folder", source.display())).into());
    }
    let destination = absolute(&args.destination)?;

    if destination.starts_with(&source) || source.starts_with(&destination) {
        return Err(UsageError(format!(
            "the destination {} and the source {} overlap; photosync would back up its own copies",
            destination.display(),
            source.display()
        ))
        .into());
    }
    let state_dir = args.state_dir.as_deref().map(absolute).transpose()?;
    if let Some(dir) = &state_dir
        && let Some((what, folder)) =
            [("source", &source), ("destination", &destination)].into_iter().find(|(_, folder)| dir.starts_with(folder))
    {
        return Err(UsageError(format!(
            "the catalog folder {} is inside the {what} {}; keep the catalog in a folder of its own",
            dir.display(),
            folder.display()
        ))
        .into());
    }
    let power = match args.on_battery {
        Some(OnBattery::Hold) => Power::Asked(Rule::Hold),
        Some(OnBattery::Allow) => Power::Asked(Rule::Allow),
        None => Power::Found(photosync::conditions::has_battery(&args.power_supply_dir)),
    };
    let choice = Starter { source: &source, destination: &destination, state_dir: state_dir.as_deref(), power };
    let text = config::starter(&choice);
    // Refuse to write something we could not read back.
    Config::parse(&text, config_path).context("internal error: the starter config does not validate")?;
    if let Some(dir) = config_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let existed = destination.is_dir();
    std::fs::create_dir_all(&destination)
        .with_context(|| format!("cannot create destination folder {}", destination.display()))?;
    std::fs::write(config_path, text).with_context(|| format!("cannot write {}", config_path.display()))?;
    println!("Wrote {}", printable(&config_path.display().to_string()));
    println!("  source:      {}", printable(&source.display().to_string()));
    let made = if existed { "a folder, already there" } else { "a folder, created" };
    println!("  destination: {} ({made})", printable(&destination.display().to_string()));
    if let Some(dir) = &state_dir {
        println!("  catalog:     {}", printable(&dir.display().to_string()));
    }
    match power {
        Power::Found(Some(true)) => {
            println!("  power:       this machine has a battery: uploads wait while it runs on it, and go on at");
            println!("               the charger (on_battery = \"allow\" under [policy] uploads on battery too)");
        }
        Power::Found(None) => {
            println!("  power:       whether this machine has a battery could not be told: uploads wait while it");
            println!("               runs on one (on_battery = \"allow\" under [policy] uploads whatever the power)");
        }
        Power::Found(Some(false)) => println!("  power:       no battery here: uploads run whatever the power"),
        Power::Asked(Rule::Hold) => {
            println!("  power:       uploads wait while the machine runs on battery (as asked)");
        }
        Power::Asked(Rule::Allow) => println!("  power:       uploads run on battery too (as asked)"),
    }
    // The config named as it was (in full, quoted for a shell), unless it
    // is where photosync looks anyway.
    let named = match (Config::default_path(), std::path::absolute(config_path)) {
        (Ok(default), Ok(full)) if default == full => String::new(),
        (_, full) => format!(" --config {}", shell_quoted(&full.unwrap_or_else(|_| config_path.to_owned()))),
    };
    println!("Next: photosync{named} backup   (or `photosync{named} daemon` to back up photos as they arrive)");
    Ok(Exit::Done)
}

/// `path` as a shell word: as it is when it holds nothing a shell would
/// read otherwise, else in single quotes (control characters escaped).
fn shell_quoted(path: &Path) -> String {
    let text = printable(&path.display().to_string()).into_owned();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,".contains(c);
    if !text.is_empty() && text.chars().all(plain) { text } else { format!("'{}'", text.replace('\'', r"'\''")) }
}

/// `path` made absolute, with symlinks in its existing part resolved, without
/// requiring it to exist.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else { break };
        rest.push(name.to_owned());
        existing = parent;
    }
    let mut resolved = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}
