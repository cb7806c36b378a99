#!/usr/bin/env bash
# End-to-end test of the Flower deployment on 127.0.0.1: makes a CA and a certificate with SAN
# 127.0.0.1 and one P-384 key per SuperNode, starts a SuperLink with TLS and SuperNode
# authentication, registers 5 node keys, starts 5 SuperNodes (client ids 0-4; client 2 on its own
# images, its shard written as an IDX file) and a sixth with an unregistered key, runs 2 rounds of
# a trimmed quick config with `flwr run`, and checks that report.json's results equal `align-fl
# run`'s for the same config bit for bit and that the unregistered node was refused. A second run kills client 4's SuperNode during round 2 and checks
# that the round completes with the other 4 and the report names client 4. Stops every process it
# started by PID. Prints "N passed, N failed".
#   usage: deploy/flower/e2e.sh        (FLWR_VENV overrides the venv, built on first use;
#          ALIGN_FL_BIN names an align-fl binary to test instead of building the release one)
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${FLWR_VENV:-$root/target/flwr-venv}"
if [ ! -x "$venv/bin/flwr" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "flwr==1.42.0" numpy || { echo "0 passed, 1 failed (installing flwr)"; exit 1; }
fi
if [ -n "${ALIGN_FL_BIN:-}" ]; then
  bin="$(cd "$(dirname "$ALIGN_FL_BIN")" && pwd)/$(basename "$ALIGN_FL_BIN")"
else
  (cd "$root" && cargo build --release -q -p align-fl) || { echo "0 passed, 1 failed (building align-fl)"; exit 1; }
  bin="$root/target/release/align-fl"
fi
export PATH="$venv/bin:$PATH"  # the SuperLink and SuperNodes start flower-superexec from it
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed + 1)); echo "ok: $1"; else failed=$((failed + 1)); echo "FAILED: $1"; fi; }

cd "$work"
# Certificates: a CA, and the SuperLink's certificate for 127.0.0.1.
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=align-fl-e2e-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
printf "subjectAltName=IP:127.0.0.1\n" > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
for k in 0 1 2 3 4 5; do ssh-keygen -q -t ecdsa -b 384 -N "" -f "node-$k"; done

# The experiment: the quick config, 2 rounds, 2 local epochs, no FID, no baseline.
sed -e "s|^data_dir = .*|data_dir = \"$root/data/subset\"|" -e 's/^rounds = .*/rounds = 2/' -e 's/^compare = .*/compare = []/' \
    -e 's/^local_epochs = .*/local_epochs = 2/' -e 's/^server_epochs = .*/server_epochs = 2/' -e 's/^\[fid\]$/[fid]\nenabled = false/' \
    "$root/configs/quick.toml" > experiment.toml

export FLWR_HOME="$work/flwr"
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "e2e"

[superlink.e2e]
address = "127.0.0.1:29091"
root-certificates = "$work/ca.crt"
TOML

"$venv/bin/flower-superlink" --ssl-ca-certfile ca.crt --ssl-certfile server.crt --ssl-keyfile server.key \
  --enable-supernode-auth --disable-runtime-dependency-installation --database "$work/superlink.db" \
  --host 127.0.0.1 --port 29091 > superlink.log 2>&1 &
pids+=($!)
port_open() { python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1" 2>/dev/null; }
for _ in $(seq 60); do port_open 29091 && break; sleep 1; done
for k in 0 1 2 3 4; do "$venv/bin/flwr" supernode register "node-$k.pub" e2e > "register-$k.log" 2>&1; done
check "5 SuperNode keys registered" '[ "$(grep -l -i "error" register-*.log | wc -l)" = 0 ]'
# Client 2 trains on its own images: its shard, written as an IDX file (so the results stay equal).
"$bin" data shard --config experiment.toml --client 2 --out client-2.idx > shard.log 2>&1
check "client 2's shard written as an image file" '[ -s client-2.idx ]'
supernode_pids=()
for k in 0 1 2 3 4 5; do
  images="data-dir=\"$root/data/subset\""
  [ $k = 2 ] && images="images=\"$work/client-2.idx\""
  PATH="$(dirname "$bin"):$PATH" "$venv/bin/flower-supernode" --superlink 127.0.0.1:29091 --root-certificates ca.crt \
    --auth-supernode-private-key "node-$k" --port $((29100 + k)) \
    --node-config "client-id=$k $images state-dir=\"$work/client-$k\" binary=\"$bin\"" > "supernode-$k.log" 2>&1 &
  pids+=($!); supernode_pids+=($!)
done

# Runs the app with the server state in $1 and the round timeout $2; waits until it ends.
flower_run() {
  "$venv/bin/flwr" run "$root/deploy/flower" e2e --stream --run-config \
    "binary=\"$bin\" experiment=\"$work/experiment.toml\" state-dir=\"$work/$1\" clients=5 round-timeout=$2" > "$1.log" 2>&1 &
  runner=$!
  pids+=($runner)
  for _ in $(seq 900); do
    [ -f "$work/$1/report.json" ] && ! [ -f "$work/$1/exchange/downlink.bin" ] && break
    [ "${3:-}" = kill-4 ] && [ -f "$work/$1/exchange/update-1-client-0.bin" ] && kill "${supernode_pids[4]}" 2>/dev/null
    kill -0 $runner 2>/dev/null || break
    sleep 1
  done
}
start=$SECONDS
flower_run server 600.0
deployed_seconds=$((SECONDS - start))
start=$SECONDS
"$bin" run --config experiment.toml --out simulated > simulate.log 2>&1
echo "2 rounds: ${deployed_seconds} s on Flower, $((SECONDS - start)) s as align-fl run"
results() { python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
for x in r['rounds']: x.pop('seconds')
print(json.dumps({'rounds': r['rounds'], 'final': r['final'], 'privacy': r['privacy']}, sort_keys=True))" "$1"; }
check "the deployment finished 2 rounds" '[ -f server/report.json ] && [ "$(python3 -c "import json; print(len(json.load(open(\"server/report.json\"))[\"rounds\"]))")" = 2 ]'
check "report.json equals the simulation bit for bit" '[ "$(results server/report.json)" = "$(results simulated/report.json)" ]'
check "the unregistered SuperNode was refused" 'grep -q -E "Failed to activate SuperNode" supernode-5.log'

# Client 4's SuperNode dies once round 1's updates arrive: round 2 goes on with the other four.
flower_run killed 60.0 kill-4
left_out() { python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
print(len(r['rounds']), [[l['client'] for l in x['left_out']] for x in r['rounds']])" "$1"; }
check "with client 4 killed, round 2 completes and names it" '[ "$(left_out killed/report.json 2>/dev/null)" = "2 [[], [4]]" ]'
if [ "$failed" != 0 ]; then
  for f in superlink.log server.log killed.log supernode-0.log supernode-5.log register-0.log simulate.log; do echo "== $f"; tail -n 30 "$f"; done
fi
echo "flower e2e: $passed passed, $failed failed ($SECONDS s)"
[ "$failed" = 0 ]
