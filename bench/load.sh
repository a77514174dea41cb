#!/usr/bin/env bash
# Load: N authenticated, idle tunnel sessions against one real `facade server`, no TUN on the client side
# (bench/load.ts). Reports the set-up rate, the server's RSS per idle session, its CPU while idle, whether the
# website still answers, and one ICMP echo per session through the server's TUN. Then the same N connections
# against a bare Node TLS server (the control), to split Node's TLS cost from facade's own.
# Run as root from the repo after `npm ci`:  bash bench/load.sh      (a few minutes)
# Env: N=5000 sessions; C=32 set-ups in flight; IDLE=30 seconds of idle phase (keepalive echoes start after
# two idle intervals: 20 s at the default 10 s); SOURCES=100 client source addresses (the server admits 64
# connections per address until they are tunnels); KEEPALIVE=seconds (server --keepalive; default: its own
# 10 s); CONTROL=0 to skip the control run; PROFILE=DIR to take a node --cpu-prof of the server during the
# run; LOG_LEVEL=info (the server's); OUT=DIR to keep the JSON results and the server log; NS=PREFIX to use
# namespaces PREFIXsrv/PREFIXcli (veths vPREFIXs/vPREFIXc) instead of fsrv/fcli, so that a load run does not
# tear down the namespaces of a bench/run.sh running at the same time.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-5000}
C=${C:-32}
IDLE=${IDLE:-30}
SOURCES=${SOURCES:-100}
LOG_LEVEL=${LOG_LEVEL:-info}
W=$(mktemp -d /tmp/facade-load.XXXXXX)
# The server drops to nobody (or the sudo user) after start-up (--run-as): its state directory must be
# reachable, and the probe (bench/load-probe.ts) writes into a directory it can write.
chmod 0755 "$W"
mkdir -m 0777 "$W/probe"
cli="$repo/dist/src/cli.js"
load="$repo/dist/bench/load.js"
# Pool: a /18 (16,382 clients) inside 198.18.0.0/15, clear of bench/run.sh's and the peers' pools.
POOL=198.19.64.0/18
PORT=8443
CONTROL_PORT=9443
TUNNEL_PATH=/load-bench
# Client source addresses: 198.18.0.100 and up, inside the veth's /24 (the server routes them already).
FIRST_SOURCE=198.18.0.100

# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"

cleanup() {
  local rc=$?
  stop_all
  netns_down
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; cp "$W"/*.json "$W"/*.log "$OUT"/ 2>/dev/null || true; fi
  rm -rf "$W"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "bench/load.sh: needs root (network namespaces, TUN)" >&2; exit 1; }
for c in ip openssl; do command -v $c >/dev/null || { echo "bench/load.sh: missing $c" >&2; exit 1; }; done
[ -f "$load" ] && [ -f "$cli" ] || (cd "$repo" && npx tsc -p .)
# N sockets in one process each side, plus the TUN and files.
ulimit -n $((N * 2 + 1024))

wait_port() { # $1 port
  for _ in $(seq 150); do ip netns exec $SRV ss -ltn | grep -q "198.18.0.1:$1 " && return 0; sleep 0.1; done
  echo "bench/load.sh: nothing listens on port $1; logs:" >&2; cat "$W"/*.log >&2; return 1
}

echo "== facade load: N=$N, C=$C, IDLE=${IDLE}s, $SOURCES source addresses, $(nproc) cores, $(date -u +%FT%TZ)"
netns_up
for k in $(seq 0 $((SOURCES - 1))); do
  ip -n $CLI addr add "198.18.0.$((100 + k))/24" dev $VCLI
done

node "$load" users --n "$N" --tunnel-path "$TUNNEL_PATH" --out "$W/users.json"

# --- facade -----------------------------------------------------------------------------------------------
# One process (--workers 1): the memory per session and the probe are read from the one server process.
flags=()
[ -n "${KEEPALIVE:-}" ] && flags+=(--keepalive "$KEEPALIVE")
prof=()
if [ -n "${PROFILE:-}" ]; then mkdir -p "$PROFILE"; chmod 0777 "$PROFILE"; prof=(--cpu-prof --cpu-prof-dir="$PROFILE"); fi
mkdir -p "$W/state"
# `ip netns exec` execs node itself, so $! is the server's pid (checked below).
FACADE_LOAD_PROBE="$W/probe/server.json" ip netns exec $SRV node --expose-gc "${prof[@]}" \
  --import "$repo/dist/bench/load-probe.js" "$cli" server --listen 198.18.0.1:$PORT --http-listen 127.0.0.1:8080 \
  --pool $POOL --users "$W/users.json" --tunnel-path $TUNNEL_PATH --state-dir "$W/state" --tun fload0 \
  --log-level "$LOG_LEVEL" --workers 1 "${flags[@]}" >"$W/server.log" 2>&1 &
spid=$!; pids+=($spid)
wait_port $PORT
grep -q node "/proc/$spid/comm" || { echo "bench/load.sh: pid $spid is not node" >&2; exit 1; }

ip netns exec $CLI node "$load" run --server 198.18.0.1:$PORT --path $TUNNEL_PATH --n "$N" --concurrency "$C" \
  --idle "$IDLE" --sources "$FIRST_SOURCE/$SOURCES" --server-pid "$spid" --probe "$W/probe/server.json" \
  --site-from 198.18.0.2 --out "$W/facade.json"
echo "server TUN: $(ip -n $SRV -s link show fload0 | awk '/RX:/{getline; print "rx " $2 " packets, " $4 " dropped"} /TX:/{getline; print "; tx " $2 " packets, " $4 " dropped"}' | tr -d '\n')"
# A clean exit (SIGINT) writes the CPU profile.
kill -INT "$spid" 2>/dev/null || true
wait "$spid" 2>/dev/null || true
pids=()
echo "server log: $(grep -c 'client connected' "$W/server.log" || true) 'client connected' lines; warnings/errors:"
grep -E '"level":(40|50|60)' "$W/server.log" | sed -E 's/.*"msg":"([^"]*)".*/\1/' | sort | uniq -c | sed 's/^/  /' || true
if [ -n "${PROFILE:-}" ]; then
  profile=$(ls -t "$PROFILE"/*.cpuprofile 2>/dev/null | head -1)
  echo "server CPU profile: $profile"
  [ -n "$profile" ] && node "$load" profile "$profile" "$W/facade.json"
fi

# --- control: the same connections against a bare Node TLS server ----------------------------------------
if [ "${CONTROL:-1}" != 0 ]; then
  echo
  FACADE_LOAD_PROBE="$W/probe/control.json" ip netns exec $SRV node --expose-gc "$load" control-server \
    --listen 198.18.0.1:$CONTROL_PORT --cert "$W/state/self-signed.crt.pem" --key "$W/state/self-signed.key.pem" \
    >"$W/control.log" 2>&1 &
  cpid=$!; pids+=($cpid)
  wait_port $CONTROL_PORT
  # The control has no website (no GET / probes): only memory and CPU count.
  ip netns exec $CLI node "$load" run --plain --server 198.18.0.1:$CONTROL_PORT --n "$N" --concurrency "$C" \
    --idle 10 --sources "$FIRST_SOURCE/$SOURCES" --server-pid "$cpid" --probe "$W/probe/control.json" \
    --site-from 198.18.0.2 --out "$W/control.json" || true
  stop_all
fi
