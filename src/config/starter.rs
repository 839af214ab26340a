//! The commented starter file `photosync init` writes.

use std::path::Path;

use super::DEFAULT_MAX_CONCURRENT;
use crate::policy::Rule;

/// What `photosync init` decided; [`starter`] writes it down.
#[derive(Debug, Clone, Copy)]
pub struct Starter<'a> {
    /// The photo folder to back up.
    pub source: &'a Path,
    /// The folder destination.
    pub destination: &'a Path,
    /// Where the catalog lives; `None` leaves the per-user default.
    pub state_dir: Option<&'a Path>,
    /// How `on_battery` was decided.
    pub power: Power,
}

/// How the starter file's `on_battery` was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// From the machine: `Some(true)` it has a battery (uploads wait while
    /// it runs on it), `Some(false)` it has none (they run whatever the
    /// power), `None` it could not be told (they wait, to be safe).
    Found(Option<bool>),
    /// As asked (`photosync init --on-battery`).
    Asked(Rule),
}

impl Power {
    /// The `on_battery` this decision writes.
    pub fn rule(self) -> Rule {
        match self {
            Power::Found(Some(false)) => Rule::Allow,
            Power::Found(_) => Rule::Hold,
            Power::Asked(rule) => rule,
        }
    }
}

/// The commented starter file `photosync init` writes.
pub fn starter(choice: &Starter<'_>) -> String {
    let why = match choice.power {
        Power::Found(Some(true)) => {
            "# This machine has a battery: uploads wait while it runs on it, and go\n\
             # on at the charger. \"allow\" uploads on battery too (min_battery_percent\n\
             # then keeps a floor)."
        }
        Power::Found(None) => {
            "# Whether this machine has a battery could not be told: uploads wait\n\
             # while it runs on one. \"allow\" uploads whatever the power."
        }
        Power::Found(Some(false)) => {
            "# No battery here: uploads run whatever the power (\"hold\" would wait\n\
             # while a battery or a UPS powers the machine)."
        }
        Power::Asked(Rule::Hold) => {
            "# Uploads wait while the machine runs on battery, and go on at the\n\
             # charger (as `photosync init --on-battery hold` asked). \"allow\" uploads\n\
             # on battery too."
        }
        Power::Asked(Rule::Allow) => {
            "# Uploads run on battery too (as `photosync init --on-battery allow`\n\
             # asked); min_battery_percent keeps a floor. \"hold\" waits for the charger."
        }
    };
    let rule = match choice.power.rule() {
        Rule::Hold => "hold",
        Rule::Allow => "allow",
    };
    let policy = format!("{why}\non_battery = \"{rule}\"");
    let state_dir = match choice.state_dir {
        Some(dir) => format!("state_dir = {}", toml_string(dir)),
        None => "# state_dir = \"~/.local/share/photosync\"".to_owned(),
    };
    format!(
        r#"# photosync configuration. Reference: README.md, "Configuration", or `man photosync`.

# Where the catalog (the upload queue and receipts) lives.
# Default: the per-user data directory.
{state_dir}

# How many uploads run at once.
# max_concurrent = {DEFAULT_MAX_CONCURRENT}

# The daemon reads a file once it has been unchanged this long (so a photo
# still being copied in is never uploaded half-written), and rescans every
# source this often in case the file watcher missed something.
# settle = "5s"
# rescan_interval = "3h"

# [retry]
# base = "30s"            # backoff after the first failure, doubling each time
# cap = "5h"              # longest backoff
# max_attempts = 30       # then the job fails for good (0: never give up)
# attempts_per_run = 3    # tries within one `photosync backup` run
# run_delay = "2s"        # pause between those tries (doubling)

[policy]
{policy}
# metered = "hold"        # on a metered network (a phone's hotspot)
# windows = ["22:00-07:00"]

[[source]]
path = {source}
# include = ["**/*.jpg"]  # globs relative to path; default: every photo and video
# exclude = ["**/Screenshots/**"]

[[destination]]
name = "backup"
type = "folder"
path = {destination}
"#,
        source = toml_string(choice.source),
        destination = toml_string(choice.destination),
    )
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}
