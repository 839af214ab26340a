#!/usr/bin/env bash
# Try photosync from a clone, with nothing installed but Rust and Python 3:
# builds the release binary, makes a sample library of 300 photos and two
# videos with their capture dates (bench/library.py) plus junk to skip, writes
# a config (photosync init) and backs the library up (photosync backup), twice:
# the second run has nothing to do. Everything, the catalog included, goes
# into one folder, ~/photosync-try unless named; delete it to start again.
#
#   bench/try.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-$HOME/photosync-try}
if [ -e "$dir" ]; then
  echo "error: $dir is already there; delete it to try again (rm -rf $dir), or name another folder: bench/try.sh DIR" >&2
  exit 1
fi
# Each step is shown as a command you can run yourself.
run() { printf '\n$ %s\n' "$*"; "$@"; }

run cargo build --release --locked --quiet
# The binary, in cargo's target folder (target/ unless configured otherwise).
ps=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/photosync
run python3 bench/library.py "$dir/library" --photos 300 --photo-kib 100 1500 --video-mib 5 20
# Uploads on battery too: the sample is small, and a laptop on battery would
# otherwise wait for the charger (what init writes by default on one).
run "$ps" --config "$dir/config.toml" init --source "$dir/library" --destination "$dir/backup" \
  --state-dir "$dir/state" --on-battery allow
run "$ps" --config "$dir/config.toml" backup
run "$ps" --config "$dir/config.toml" backup
cat <<END

The copies are in $dir/backup, in the library's own folders (a \`layout\` in the
config sorts them by capture date instead: README.md, "Where photos go"). Next:
  $ps --config $dir/config.toml why $dir/library/notes.txt
  $ps --config $dir/config.toml verify
END
