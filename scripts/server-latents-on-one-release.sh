#!/usr/bin/env bash
# One release of the clients, one global model per server latent: runs a deployment on this
# machine (the `align-fl client` and `align-fl server` commands that deploy/flower calls, with the
# files passed by hand instead of by Flower) and feeds every round's updates to one server per
# latent in LATENTS. Under DP-SGD the servers' models are post-processing of the clients' one
# release, so choosing among them costs no ε (docs/deployment.md, "More than one global model on
# the same updates").
#
#   scripts/server-latents-on-one-release.sh BINARY CONFIG SEED OUT LATENT...
#   scripts/server-latents-on-one-release.sh --replay BINARY CONFIG SEED OUT LATENT...
#
# CONFIG is the clients' protocol (its [server] section without a [server.model]); each server
# gets CONFIG plus a [server.model] with the clients' widths and its own latent. The data
# directory is $ALIGN_FL_DATA. OUT/server-latent-L/ ends with that server's report.json and
# report.md; OUT/clients/ holds the clients' states and every round's updates
# (round-R/update-K.bin). With --replay, OUT already holds such a release (same BINARY, CONFIG and
# SEED) and no client runs: the new servers in LATENTS read the saved updates, round by round, so
# they are post-processing of that same release too. FID is skipped (`--no-fid`).
set -euo pipefail

replay=false
[ "${1:-}" = --replay ] && { replay=true; shift; }
if [ $# -lt 5 ]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
binary=$1 config=$2 seed=$3 out=$4
shift 4
latents=("$@")
: "${ALIGN_FL_DATA:?set ALIGN_FL_DATA to the data directory}"
if $replay; then
  [ -f "$out/clients/round-1/update-0.bin" ] || { echo "$out holds no saved release (no clients/round-1/update-0.bin)" >&2; exit 2; }
  for latent in "${latents[@]}"; do
    [ -e "$out/server-latent-$latent" ] && { echo "$out/server-latent-$latent exists: replay only new latents" >&2; exit 2; }
  done
else
  [ -e "$out" ] && { echo "$out exists: give a new folder (or --replay to add servers)" >&2; exit 2; }
fi
grep -q '^\[server\.model\]' "$config" && { echo "$config has a [server.model]: give the clients' protocol" >&2; exit 2; }

# The clients' architecture, read from CONFIG's [model], for every server's [server.model].
model_line() { sed -n '/^\[model\]/,/^\[/p' "$config" | grep "^$1 *=" | head -1; }
encoder=$(model_line encoder) decoder=$(model_line decoder)
[ -n "$encoder" ] && [ -n "$decoder" ] || { echo "$config: no encoder/decoder in [model]" >&2; exit 2; }

mkdir -p "$out/clients"
clients=$(sed -n 's/^clients *= *\([0-9]*\).*/\1/p' "$config" | head -1)
for latent in "${latents[@]}"; do
  server="$out/server-latent-$latent"
  { cat "$config"; printf '\n[server.model]\n%s\nlatent = %s\n%s\n' "$encoder" "$latent" "$decoder"; } > "$out/server-latent-$latent.toml"
  "$binary" server init --config "$out/server-latent-$latent.toml" --seed "$seed" --no-fid \
    --data-dir "$ALIGN_FL_DATA" --state "$server" --downlink "$server.downlink"
done

# The first server's downlink is the one the clients read; the others' only name the next round.
# Replaying, every round's updates must have been saved: a missing one stops the script.
lead="$out/server-latent-${latents[0]}.downlink"
round=1
while [ -f "$lead" ]; do
  updates=()
  $replay || mkdir -p "$out/clients/round-$round"
  for ((c = 0; c < clients; c++)); do
    update="$out/clients/round-$round/update-$c.bin"
    if $replay; then
      [ -f "$update" ] || { echo "$update is missing: the saved release ends before the protocol's last round" >&2; exit 1; }
    else
      "$binary" client round --client "$c" --data-dir "$ALIGN_FL_DATA" --state "$out/clients/state-$c" \
        --downlink "$lead" --update "$update"
    fi
    updates+=(--update "$c=$update")
  done
  round=$((round + 1))
  for latent in "${latents[@]}"; do
    "$binary" server round --state "$out/server-latent-$latent" "${updates[@]}" \
      --downlink "$out/server-latent-$latent.downlink"
  done
done
for latent in "${latents[@]}"; do
  echo "server latent $latent: $out/server-latent-$latent/report.md"
done
