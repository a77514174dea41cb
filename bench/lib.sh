# Shared by bench/run.sh and bench/load.sh (sourced, after `repo` is set): the two namespaces a run works
# in, and the processes it starts. NS=PREFIX names them PREFIXsrv/PREFIXcli (veths vPREFIXs/vPREFIXc)
# instead of fsrv/fcli, so that two runs at once do not tear down each other's namespaces.

NS=${NS:-f}
SRV=${NS}srv
CLI=${NS}cli

peers_dir=""
for d in "$repo/../shared/bench-peers" /work/shared/bench-peers; do
  if [ -f "$d/netns.sh" ]; then peers_dir=$(cd "$d" && pwd); break; fi
done

netns_down() { ip netns del "$SRV" 2>/dev/null || true; ip netns del "$CLI" 2>/dev/null || true; }
# Same names and addresses as shared/bench-peers/netns.sh, so the figures are comparable. Sets VCLI, the
# client's veth.
netns_up() {
  if [ -n "$peers_dir" ] && [ "$NS" = f ]; then bash "$peers_dir/netns.sh" up; VCLI=vcli; return; fi
  netns_down
  local vs=vsrv vc=vcli
  [ "$NS" = f ] || { vs="v${NS}s"; vc="v${NS}c"; }
  ip netns add "$SRV"; ip netns add "$CLI"
  ip link add $vs type veth peer name $vc
  ip link set $vs netns "$SRV"; ip link set $vc netns "$CLI"
  ip -n "$SRV" addr add 198.18.0.1/24 dev $vs; ip -n "$CLI" addr add 198.18.0.2/24 dev $vc
  for n in "$SRV" "$CLI"; do ip -n "$n" link set lo up; done
  ip -n "$SRV" link set $vs up; ip -n "$CLI" link set $vc up
  VCLI=$vc
}

pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
