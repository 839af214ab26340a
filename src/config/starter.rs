//! The commented starter file `photosync init` writes.

use std::path::Path;

use super::DEFAULT_MAX_CONCURRENT;

/// The commented starter file `photosync init` writes.
pub fn starter(source: &Path, destination: &Path) -> String {
    format!(
        r#"# photosync configuration. Reference: README.md, "Configuration".

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
