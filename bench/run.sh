#!/usr/bin/env bash
# Throughput (iperf3) and latency (ping) of facade through its tunnel, side by side with plain veth and the
# peers (OpenVPN, ocserv), all in one run on this machine. Absolute figures drift with the machine; read the
# ratios. Run as root from the repo after `npm ci`:  bash bench/run.sh
# Env: T=seconds per iperf3 run (default 6); SKIP_PEERS=1 to skip OpenVPN/ocserv; PROFILE=DIR to also take a
# node --cpu-prof of server and client during one extra TLS upload + download (profiles land in DIR);
# CPU=1 to sample per-process CPU (pidstat) of the facade node processes during each iperf3 run;
# LAT=only: idle ping only (plain veth, then facade; LAT_MODE=plaintext|ws|h2 for another facade mode);
# CLIENTS=N clients (default 4) for the facade-Ncli-w1 and -w2 rows (--workers 1 and 2);
# GC=1 (GC=only: nothing else) to run one more TLS upload and download (after a 3 s warm-up each way, counted apart) with
# node --trace-gc on both ends and count the collections
# by kind (Scavenge, Mark-Compact, ...): the garbage the data path makes, per direction; GC_FLAGS adds node flags
# to both ends there, GC_LOGS=DIR keeps both ends' logs (e.g. GC_FLAGS="--heap-prof --heap-prof-dir=/tmp/hp": where the survivors were allocated).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
T=${T:-6}
W=$(mktemp -d /tmp/facade-bench.XXXXXX)
# The server drops to nobody after start-up (--run-as): the state directory in here must be reachable.
chmod 0755 "$W"
cli="$repo/dist/src/cli.js"
# Facade's pool: inside 198.18.0.0/15, clear of the peers' pools (OpenVPN 198.19.0.0/24, ocserv 198.20.0.0/24).
POOL=198.19.128.0/24
TUN_ADDR=198.19.128.1
PORT=8443
IPERF_PORT=5299

# Its namespaces are always fsrv/fcli: peers.sh measures in the same ones.
NS=f
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"

cleanup() {
  local rc=$?
  stop_all
  netns_down
  rm -rf "$W"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: needs root (network namespaces, TUN)" >&2; exit 1; }
for c in iperf3 ping ip python3 openssl; do
  command -v $c >/dev/null || { echo "bench/run.sh: missing $c" >&2; exit 1; }
done
[ -f "$cli" ] || (cd "$repo" && npx tsc -p .)

results="$W/results"; : >"$results"

# iperf3 once: $1 target, $2 extra iperf3 flags (e.g. -R). Prints Mbit/s received.
iperf() {
  ip netns exec fsrv iperf3 -s -1 -p $IPERF_PORT >/dev/null 2>&1 &
  local sp=$!; pids+=($sp)
  for _ in $(seq 20); do ip netns exec fsrv ss -ltn | grep -q ":$IPERF_PORT " && break; sleep 0.1; done
  local bw
  bw=$(ip netns exec fcli iperf3 -c "$1" -t "$T" -p $IPERF_PORT ${2:-} -J 2>/dev/null |
    python3 -c 'import json,sys;print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))') || bw=0
  # A failed client leaves `iperf3 -s -1` waiting for ever: end it ourselves.
  kill "$sp" 2>/dev/null || true
  wait "$sp" 2>/dev/null || true
  echo "$bw"
}
rtt() { ip netns exec fcli ping -q -c 50 -i 0.02 "$1" | awk -F/ '/^rtt/{print $5}'; }
# record NAME MBIT RTT [SERVER_CPU_S_PER_GB CLIENT_CPU_S_PER_GB RTT_UNDER_LOAD]
record() {
  printf '%s %s %s %s %s %s\n' "$1" "$2" "$3" "${4:--}" "${5:--}" "${6:--}" >>"$results"
  printf '%-20s %8s Mbit/s  rtt %s ms\n' "$1" "$2" "$3"
}
# CPU time (utime + stime, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU seconds per GB moved: $1 ticks used, $2 Mbit/s, over T seconds.
per_gb() { python3 -c "import os,sys; t=$1/os.sysconf('SC_CLK_TCK'); gb=$2*$T/8/1000; print(f'{t/gb:.2f}' if gb else '-')"; }
# iperf3 with the CPU both facade processes spent on it; sets bw srv_gb cli_gb. $1 target, $2 flags.
iperf_cpu() {
  local s0 c0
  s0=$(cpu_ticks "$spid"); c0=$(cpu_ticks "$cpid")
  bw=$(iperf "$1" "${2:-}")
  srv_gb=$(per_gb $(($(cpu_ticks "$spid") - s0)) "$bw")
  cli_gb=$(per_gb $(($(cpu_ticks "$cpid") - c0)) "$bw")
}
# Ping through the tunnel while an upload runs (bufferbloat in facade's own queues shows here): avg/max ms.
rtt_under_load() {
  local out="$W/ping-load"
  (sleep 1; ip netns exec fcli ping -q -c $((T * 5 - 10 > 5 ? T * 5 - 10 : 5)) -i 0.2 "$1" >"$out" 2>&1) &
  local pp=$!
  iperf "$1" >/dev/null
  wait "$pp" 2>/dev/null || true
  awk -F/ '/^rtt/{printf "%s/%s", $5, $6}' "$out"
}

# CPU of the facade node processes while an iperf3 runs: pidstat over the middle of the run.
cpu_sample() { # $1 label, $2 server pid, $3 client pid
  [ -n "${CPU:-}" ] && command -v pidstat >/dev/null || return 0
  local n=$((T > 4 ? T - 3 : 1))
  (sleep 1.5; pidstat -u -p "$2,$3" 1 "$n" | awk -v l="$1" -v s="$2" -v c="$3" \
    '/^Average/ && $3==s {print "  cpu " l " server: usr " $4 "% sys " $5 "% total " $8 "%"}
     /^Average/ && $3==c {print "  cpu " l " client: usr " $4 "% sys " $5 "% total " $8 "%"}' >>"$W/cpu") &
}

wait_log() { # $1 file, $2 pattern, $3 what
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench/run.sh: $3 did not come up; log:" >&2; cat "$1" >&2; return 1
}

# --- facade ---------------------------------------------------------------------------------------------
echo secretpw | node "$cli" user add alice --users "$W/users.json" --tunnel-path /bench >/dev/null
echo secretpw >"$W/pw"

facade_up() { # $1 = tls|limits|ws|h2|plaintext|no-offload (TLS without GSO offload); sets spid cpid
  # tls is the raw HTTP/1.1 upgrade; ws and h2 the WebSocket and HTTP/2 extended CONNECT transports.
  local mode=$1 flags="" url="https://198.18.0.1:$PORT/bench" pin=() transport=(--transport upgrade)
  rm -rf "$W/state"; mkdir -p "$W/state"
  if [ "$mode" = plaintext ]; then flags=--plaintext; url="http://198.18.0.1:$PORT/bench"; fi
  if [ "$mode" = no-offload ]; then flags=--no-offload; fi
  if [ "$mode" = ws ]; then transport=(--transport websocket); fi
  if [ "$mode" = h2 ]; then transport=(--transport h2); fi
  # limits: the TLS row again with a rate limit and a quota set high enough never to bind (issue 13): the
  # cost of shaping and the quota's byte budget beside the unlimited tls row of the same run.
  if [ "$mode" = limits ]; then
    node "$cli" user set alice --users "$W/users.json" --rate 100gbit --quota 100TB --quota-period day >/dev/null
  else
    node "$cli" user set alice --users "$W/users.json" --rate none --quota none >/dev/null
  fi
  ip netns exec fsrv node "$cli" server --listen 198.18.0.1:$PORT --http-listen 127.0.0.1:8080 --pool $POOL \
    --users "$W/users.json" --tunnel-path /bench --state-dir "$W/state" --tun fsrv0 --log-level info $flags \
    --workers 1 >"$W/server.log" 2>&1 &
  spid=$!; pids+=($spid)
  for _ in $(seq 100); do ip netns exec fsrv ss -ltn | grep -q "198.18.0.1:$PORT " && break; sleep 0.1; done
  if [ "$mode" != plaintext ]; then
    local fp
    fp=$(openssl x509 -in "$W/state/self-signed.crt.pem" -outform der | sha256sum | cut -d' ' -f1)
    pin=(--pin "sha256:$fp")
  fi
  ip netns exec fcli node "$cli" client "$url" --user alice --password-file "$W/pw" "${pin[@]}" --tun fbench0 \
    --log-level info $flags "${transport[@]}" >"$W/client.log" 2>&1 &
  cpid=$!; pids+=($cpid)
  wait_log "$W/client.log" "connected:" "facade client ($mode)"
}

measure_facade() { # $1 = tls|ws|h2|plaintext|no-offload
  local mode=$1 bw bw_r r srv_gb cli_gb srv_gb_r cli_gb_r loaded=-
  facade_up "$mode"
  cpu_sample "facade-$mode up" "$spid" "$cpid"; iperf_cpu $TUN_ADDR
  local up=$bw up_s=$srv_gb up_c=$cli_gb
  cpu_sample "facade-$mode down" "$spid" "$cpid"; iperf_cpu $TUN_ADDR -R
  bw_r=$bw srv_gb_r=$srv_gb cli_gb_r=$cli_gb
  r=$(rtt $TUN_ADDR)
  if [ "$mode" = tls ]; then loaded=$(rtt_under_load $TUN_ADDR); fi
  record "facade-$mode" "$up" "$r" "$up_s" "$up_c" "$loaded"
  record "facade-$mode-R" "$bw_r" "$r" "$srv_gb_r" "$cli_gb_r"
  if [ "$mode" = tls ]; then
    iperf_cpu $TUN_ADDR "-P 4"
    record "facade-$mode-P4" "$bw" "$r" "$srv_gb" "$cli_gb"
  fi
  stop_all
}

# The ceiling: one Node TLS stream (64 KiB writes) between the two namespaces, no tunnel.
measure_tls_stream() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench \
    -keyout "$W/ts.key" -out "$W/ts.crt" >/dev/null 2>&1
  ip netns exec fsrv node "$repo/dist/bench/tls-stream.js" server 198.18.0.1 9443 "$W/ts.crt" "$W/ts.key" \
    >"$W/ts.out" 2>&1 &
  local sp=$!; pids+=($sp)
  wait_log "$W/ts.out" listening "the TLS stream server"
  ip netns exec fcli node "$repo/dist/bench/tls-stream.js" client 198.18.0.1 9443 "$T" >/dev/null 2>&1 || true
  wait "$sp" 2>/dev/null || true
  record tls-stream "$(awk '/^Mbit/{print $2}' "$W/ts.out")" -
}

# The latency floor of any Node data path: a Node TCP echo between the namespaces (two event-loop wake-ups per
# round trip; facade's tunnel makes four), 50 messages 20 ms apart like rtt(). Recorded as node-echo, rtt only.
measure_echo_floor() {
  ip netns exec fsrv node "$repo/dist/bench/echo-floor.js" server 198.18.0.1 9444 >"$W/echo.out" 2>&1 &
  local sp=$!; pids+=($sp)
  wait_log "$W/echo.out" listening "the echo server"
  local r
  r=$(ip netns exec fcli node "$repo/dist/bench/echo-floor.js" client 198.18.0.1 9444 50 20 | awk '/^rtt/{print $2}')
  wait "$sp" 2>/dev/null || true
  record node-echo - "${r:--}"
}

profile_facade() { # one TLS upload with node --cpu-prof on both ends
  local dir=$1; mkdir -p "$dir/server" "$dir/client"
  rm -rf "$W/state"; mkdir -p "$W/state"
  ip netns exec fsrv node --cpu-prof --cpu-prof-dir="$dir/server" "$cli" server \
    --listen 198.18.0.1:$PORT --http-listen 127.0.0.1:8080 --pool $POOL --users "$W/users.json" \
    --tunnel-path /bench --state-dir "$W/state" --tun fsrv0 --log-level info --workers 1 >"$W/server.log" 2>&1 &
  spid=$!; pids+=($spid)
  for _ in $(seq 100); do ip netns exec fsrv ss -ltn | grep -q "198.18.0.1:$PORT " && break; sleep 0.1; done
  local fp; fp=$(openssl x509 -in "$W/state/self-signed.crt.pem" -outform der | sha256sum | cut -d' ' -f1)
  ip netns exec fcli node --cpu-prof --cpu-prof-dir="$dir/client" "$cli" client \
    "https://198.18.0.1:$PORT/bench" --user alice --password-file "$W/pw" --pin "sha256:$fp" --tun fbench0 \
    --log-level info --transport upgrade >"$W/client.log" 2>&1 &
  cpid=$!; pids+=($cpid)
  wait_log "$W/client.log" "connected:" "facade client (profile)"
  echo "profile upload: $(iperf $TUN_ADDR) Mbit/s; download: $(iperf $TUN_ADDR -R) Mbit/s (profiler on)"
  # --cpu-prof writes its file on a clean exit; facade exits cleanly on SIGINT. (Node 20 refuses --cpu-prof
  # in NODE_OPTIONS, hence the flag on the command line.)
  kill -INT "$cpid" "$spid" 2>/dev/null || true
  wait "$cpid" "$spid" 2>/dev/null || true
  pids=()
  echo "profiles: $dir/server $dir/client"
}

gc_facade() { # one TLS upload and one download with --trace-gc on both ends; counts collections by kind
  rm -rf "$W/state"; mkdir -p "$W/state"
  ip netns exec fsrv node --trace-gc ${GC_FLAGS:-} "$cli" server \
    --listen 198.18.0.1:$PORT --http-listen 127.0.0.1:8080 --pool $POOL --users "$W/users.json" \
    --tunnel-path /bench --state-dir "$W/state" --tun fsrv0 --log-level warn --workers 1 >"$W/gc-server.log" 2>&1 &
  spid=$!; pids+=($spid)
  for _ in $(seq 100); do ip netns exec fsrv ss -ltn | grep -q "198.18.0.1:$PORT " && break; sleep 0.1; done
  local fp; fp=$(openssl x509 -in "$W/state/self-signed.crt.pem" -outform der | sha256sum | cut -d' ' -f1)
  ip netns exec fcli node --trace-gc ${GC_FLAGS:-} "$cli" client \
    "https://198.18.0.1:$PORT/bench" --user alice --password-file "$W/pw" --pin "sha256:$fp" --tun fbench0 \
    --log-level info --transport upgrade >"$W/gc-client.log" 2>&1 &
  cpid=$!; pids+=($cpid)
  wait_log "$W/gc-client.log" "connected:" "facade client (gc)"
  local dir
  # warm: a 3 s upload and download first, counted apart. A fresh V8 heap grows to its working size with
  # one early mark-compact (old space reaching its first limit), whatever the traffic; steady state follows.
  for dir in warm up down; do
    local from_s from_c bw secs=$T
    from_s=$(stat -c %s "$W/gc-server.log"); from_c=$(stat -c %s "$W/gc-client.log")
    case $dir in
      warm) secs=6; bw=$(T=3 iperf $TUN_ADDR)/$(T=3 iperf $TUN_ADDR -R) ;;
      up) bw=$(iperf $TUN_ADDR) ;;
      down) bw=$(iperf $TUN_ADDR -R) ;;
    esac
    for side in server client; do
      local from=$from_s; [ $side = client ] && from=$from_c
      printf 'gc %-4s %-6s %9s Mbit/s in %ss: ' $dir $side "$bw" "$secs"
      tail -c +$((from + 1)) "$W/gc-$side.log" | grep -aoE '(Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Sweep)' |
        sort | uniq -c | awk '{n=$1; $1=""; printf "%s%s x%d", sep, $0, n; sep=","} END {if (!NR) printf "none"; print ""}' ||
        true
      # Why the major ones ran (V8's words at the end of each trace line).
      tail -c +$((from + 1)) "$W/gc-$side.log" | grep -a 'Mark-Compact' | sed -E 's/.*current mu = [0-9.]+\) //' |
        sort | uniq -c | sort -rn | head -3 | sed 's/^/    /' || true
    done
  done
  stop_all
  if [ -n "${GC_LOGS:-}" ]; then mkdir -p "$GC_LOGS"; cp "$W/gc-server.log" "$W/gc-client.log" "$GC_LOGS/"; fi
}

# Several clients at once against --workers $1: CLIENTS clients, each in its own namespace fwK with a veth to
# fsrv, each uploading with its own iperf3 at the same time; the row is the sum. Their CPU is the machine's
# too: on a small machine the clients take cores the workers would use.
CLIENTS=${CLIENTS:-4}
measure_workers() { # $1 = workers
  local w=$1 k fp total=0 out
  rm -rf "$W/state"; mkdir -p "$W/state"
  for k in $(seq "$CLIENTS"); do
    ip netns del "fw$k" 2>/dev/null || true
    ip netns add "fw$k"
    ip link add "vw${k}s" type veth peer name "vw${k}c"
    ip link set "vw${k}s" netns fsrv; ip link set "vw${k}c" netns "fw$k"
    ip -n fsrv addr add "198.18.$((10 + k)).1/24" dev "vw${k}s"; ip -n "fw$k" addr add "198.18.$((10 + k)).2/24" dev "vw${k}c"
    ip -n fsrv link set "vw${k}s" up; ip -n "fw$k" link set "vw${k}c" up; ip -n "fw$k" link set lo up
    echo secretpw | node "$cli" user add "bench$k" --users "$W/users.json" --tunnel-path /bench >/dev/null 2>&1 || true
  done
  ip netns exec fsrv node "$cli" server --listen 0.0.0.0:$PORT --http-listen 127.0.0.1:8080 --pool $POOL \
    --users "$W/users.json" --tunnel-path /bench --state-dir "$W/state" --tun fsrv0 --log-level info \
    --workers "$w" >"$W/server-w.log" 2>&1 &
  spid=$!; pids+=($spid)
  wait_log "$W/server-w.log" "facade server ready" "facade server --workers $w"
  fp=$(openssl x509 -in "$W/state/self-signed.crt.pem" -outform der | sha256sum | cut -d' ' -f1)
  for k in $(seq "$CLIENTS"); do
    ip netns exec "fw$k" node "$cli" client "https://198.18.$((10 + k)).1:$PORT/bench" --user "bench$k" \
      --password-file "$W/pw" --pin "sha256:$fp" --tun "fbw$k" --log-level info --transport upgrade \
      >"$W/client-w$k.log" 2>&1 &
    pids+=($!)
    wait_log "$W/client-w$k.log" "connected:" "facade client $k (--workers $w)"
  done
  for k in $(seq "$CLIENTS"); do
    ip netns exec fsrv iperf3 -s -1 -p $((IPERF_PORT + k)) >/dev/null 2>&1 &
    pids+=($!)
  done
  sleep 0.5
  local ipids=()
  for k in $(seq "$CLIENTS"); do
    ip netns exec "fw$k" iperf3 -c $TUN_ADDR -t "$T" -p $((IPERF_PORT + k)) -J >"$W/iperf-w$k.json" 2>/dev/null &
    ipids+=($!)
  done
  wait "${ipids[@]}" 2>/dev/null || true
  for k in $(seq "$CLIENTS"); do
    out=$(python3 -c 'import json,sys;print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e6))' "$W/iperf-w$k.json" 2>/dev/null || echo 0)
    total=$((total + out))
  done
  record "facade-${CLIENTS}cli-w$w" "$total" "-"
  stop_all
  for k in $(seq "$CLIENTS"); do ip netns del "fw$k" 2>/dev/null || true; done
}

echo "== facade bench: T=${T}s per iperf3 run, $(nproc) cores, $(date -u +%FT%TZ)"
netns_up
if [ "${GC:-}" = only ]; then gc_facade; exit 0; fi
if [ "${LAT:-}" = only ]; then
  # Idle round trips only, 200 pings each at -i 0.02 and -i 0.2: plain veth, then through facade's tunnel.
  for i in 0.02 0.2; do echo "plain  -i $i: $(ip netns exec fcli ping -q -c 200 -i $i 198.18.0.1 | awk -F' = ' '/^rtt/{print $2}')"; done
  measure_echo_floor; awk '$1=="node-echo"{print "node-echo (Node TCP echo, 20 ms apart): rtt avg " $3 " ms"}' "$results"
  facade_up "${LAT_MODE:-tls}"
  for i in 0.02 0.2; do echo "facade -i $i: $(ip netns exec fcli ping -q -c 200 -i $i $TUN_ADDR | awk -F' = ' '/^rtt/{print $2}')"; done
  exit 0
fi
record plain "$(iperf 198.18.0.1)" "$(rtt 198.18.0.1)"
measure_echo_floor
measure_tls_stream
measure_facade tls
measure_facade limits
measure_facade ws
measure_facade h2
measure_facade plaintext
measure_facade no-offload
measure_workers 1
measure_workers 2
if [ -n "${PROFILE:-}" ]; then profile_facade "$PROFILE"; fi
if [ -n "${GC:-}" ]; then gc_facade; fi
netns_down

# --- peers (peers.sh builds its own fsrv/fcli, so ours are down by now) ----------------------------------
if [ -z "${SKIP_PEERS:-}" ] && [ -n "$peers_dir" ]; then
  T=$T bash "$peers_dir/peers.sh" 2>/dev/null | tee "$W/peers.out" | sed 's/^/peers.sh: /' || true
  # peers.sh measures plain veth again: kept as plain-peers, a check of how much the machine drifted.
  awk '$1=="plain"{print "plain-peers", $2, $5} $1=="openvpn"||$1=="ocserv"{print $1, $2, $5}' \
    "$W/peers.out" >>"$results"
elif [ -z "${SKIP_PEERS:-}" ]; then
  echo "(peers skipped: shared/bench-peers/peers.sh not found next to the repo)"
fi

# --- table ----------------------------------------------------------------------------------------------
echo
[ -f "$W/cpu" ] && { echo "CPU of the facade node processes (pidstat average, % of one core):"; cat "$W/cpu"; echo; }
python3 - "$results" <<'EOF'
import sys
rows = [(l.split() + ['-'] * 6)[:6] for l in open(sys.argv[1]) if l.strip()]
def num(text):
    try:
        return float(text)
    except ValueError:
        return 0.0
bw = {r[0]: num(r[1]) for r in rows}
def ratio(n, ref):
    return f"{n / bw[ref]:.2f}" if bw.get(ref) else "-"
print(f"{'system':<20} {'Mbit/s':>8} {'x plain':>8} {'x tls':>6} {'x openvpn':>10} {'x ocserv':>9} {'rtt ms':>7}"
      f" {'srv s/GB':>9} {'cli s/GB':>9} {'rtt loaded avg/max':>19}")
for name, mbit, rtt, srv, cli, loaded in rows:
    m = num(mbit)
    shown = f"{m:>8.0f}" if mbit != '-' else f"{'-':>8}"
    print(f"{name:<20} {shown} {ratio(m, 'plain'):>8} {ratio(m, 'tls-stream'):>6} {ratio(m, 'openvpn'):>10}"
          f" {ratio(m, 'ocserv'):>9} {rtt:>7} {srv:>9} {cli:>9} {loaded:>19}")
print("(-R = iperf3 reverse, server->client; -P4 = four streams; rtt is one ping run per system, shared by its")
print(" -R row; s/GB = CPU seconds of the facade server/client process per GB moved; rtt loaded = ping -i 0.2")
print(" through the tunnel during a full-speed upload; tls-stream = one Node TLS stream, the ceiling;")
print(" facade-Ncli-wW = N clients uploading at once to a server with --workers W, summed; node-echo = a")
print(" Node TCP echo between the namespaces, 20 ms apart: two Node wake-ups, the floor of any Node data path)")
EOF
