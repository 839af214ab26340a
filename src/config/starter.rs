//! The commented starter file `photosync init` writes.

use std::path::Path;

use super::DEFAULT_MAX_CONCURRENT;

/// The commented starter file `photosync init` writes.
/// `battery`: whether the machine has one (`None`: it could not be told).
/// With one, or in doubt, uploads wait while it runs on battery; without,
/// they run whatever the power.
pub fn starter(source: &Path, destination: &Path, battery: Option<bool>) -> String {
    let policy = match battery {
        Some(true) => {
            "# This machine has a battery: uploads wait while it runs on it, and go\n\
             # on at the charger. \"allow\" uploads on battery too (min_battery_percent\n\
             # then keeps a floor).\n\
             on_battery = \"hold\""
        }
        None => {
            "# Whether this machine has a battery could not be told: uploads wait\n\
             # while it runs on one. \"allow\" uploads whatever the power.\n\
             on_battery = \"hold\""
        }
        Some(false) => {
            "# No battery here: uploads run whatever the power (\"hold\" would wait\n\
             # while a battery or a UPS powers the machine).\n\
             on_battery = \"allow\""
        }
    };
    format!(
        r#"# photosync configuration. Reference: README.md, "Configuration", or `man photosync`.

# Where the catalog (the upload queue and receipts) lives.
# Default: the per-user data directory.
# state_dir = "~/.local/share/photosync"

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
        source = toml_string(source),
        destination = toml_string(destination),
    )
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}
