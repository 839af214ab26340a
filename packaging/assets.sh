#!/usr/bin/env bash
# What the packages install besides the binary, made from the built binary
# and the repository: the systemd user unit naming /usr/bin/photosync, the
# shell completions and the manual page. They are written next to the binary,
# in packaging/, where `cargo deb` and `cargo generate-rpm` find them (their
# assets name them as target/release/packaging/…).
#
#   packaging/assets.sh [BINARY]    # default: release/photosync in cargo's
#                                   # target folder (target/ unless configured)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
  bin=$1
else
  target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  bin=$target/release/photosync
fi
if ! [ -x "$bin" ]; then
  echo "error: no photosync binary at $bin; build it first: cargo build --release --locked" >&2
  exit 1
fi
out=$(dirname "$bin")/packaging
mkdir -p "$out"

# The unit in the repository is installed by hand into ~/.config and runs
# ~/.cargo/bin/photosync; the packaged one runs /usr/bin/photosync and says
# how a user turns it on.
{
  echo "# photosync as a systemd user service, installed by its package. Each user who"
  echo "# wants it turns it on for themselves:"
  echo "#   systemctl --user enable --now photosync"
  sed -e '/^# photosync as a systemd user service/,/^#   systemctl --user daemon-reload/d' \
    -e 's|^ExecStart=%h/\.cargo/bin/photosync |ExecStart=/usr/bin/photosync |' \
    systemd/photosync.service
} > "$out/photosync.service"
if ! grep -qx 'ExecStart=/usr/bin/photosync daemon' "$out/photosync.service" \
  || grep -q '^#   install ' "$out/photosync.service"; then
  echo "error: systemd/photosync.service changed shape; packaging/assets.sh no longer rewrites it" >&2
  exit 1
fi

"$bin" completions bash > "$out/photosync.bash"
"$bin" completions zsh > "$out/_photosync"
"$bin" completions fish > "$out/photosync.fish"
"$bin" man | gzip -9n > "$out/photosync.1.gz"
echo "$out: photosync.service photosync.bash _photosync photosync.fish photosync.1.gz"
