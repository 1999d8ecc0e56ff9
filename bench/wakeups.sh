#!/bin/bash
# What a shard's wake-ups cost: the sbc's CPU per call, per thread, from
# /proc/PID/task/TID/schedstat (nanosecond run time and times scheduled in,
# not clock ticks), while stock sipp makes CALLS one-second calls at RATE
# calls/s through one shard; the load shares the machine's cores.
# With IDLE=1 it measures the idle process instead (20 s, no calls).
#
# Run from anywhere after `cargo build --release -p sbc-controlplane`:
#   bench/wakeups.sh                       # UDP, 300 calls/s, 3000 calls
#   T=tcp RATE=1000 CALLS=8000 bench/wakeups.sh
#   BATCH_WAIT_US=10000 bench/wakeups.sh   # shards.batch_wait_us
#   IDLE=1 bench/wakeups.sh
# Installs sipp when missing.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SBC=${SBC:-$ROOT/target/release/sbc}
S=$ROOT/loadtest/scenarios
CERTS=$ROOT/config/examples/certs
N=127.89.0
T=${T:-udp}; RATE=${RATE:-300}; CALLS=${CALLS:-3000}
command -v sipp >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null; }
command -v bc >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
[ -x "$SBC" ] || { echo "build first: cargo build --release -p sbc-controlplane" >&2; exit 1; }
W=$(mktemp -d)
. "$ROOT/bench/sbc-bench-config.sh"
sbc_bench_config "$T" 5060 "" "${BATCH_WAIT_US:+batch_wait_us = $BATCH_WAIT_US}" > $W/sbc.toml
st=u1; [ "$T" != udp ] && st=t1
cleanup() { pkill -f "sipp -sf $S" 2>/dev/null; [ -n "${P:-}" ] && kill "$P" 2>/dev/null; sleep 1; rm -rf "$W"; }
trap cleanup EXIT
[ -z "${IDLE:-}" ] && sipp -sf $S/uas_answer.xml -i $N.20 -p 5060 -t $st -m $CALLS -mp 47800 -cp 47810 -bg -nostdin >/dev/null 2>&1
RUST_LOG=warn $SBC --config $W/sbc.toml 2>$W/sbc.log & P=$!
sleep 3
for t in /proc/$P/task/*; do echo "$t $(cut -d' ' -f1,3 $t/schedstat)"; done > $W/before
if [ -n "${IDLE:-}" ]; then
  sleep 20
else
  sipp -sf $S/uac_basic.xml -s 15550100 -i $N.10 -p 5060 $N.1:5060 -t $st -r $RATE -m $CALLS -d 1000 \
    -mp 47820 -cp 47830 -nostdin -trace_stat -stf $W/st.csv -timeout 180 >/dev/null 2>&1
fi
total=0
while read -r t r0 n0; do
  read -r r _ n < $t/schedstat
  us=$(( (r - r0) / 1000 )); total=$((total + us))
  [ $us -gt 0 ] && echo "  $(cat $t/comm): run ${us} µs, scheduled in $((n - n0)) times"
done < $W/before
if [ -n "${IDLE:-}" ]; then
  echo "idle 20 s: ${total} µs of CPU"
else
  col=$(head -1 $W/st.csv | tr ';' '\n' | grep -n '^SuccessfulCall(C)$' | cut -d: -f1)
  ok=$(tail -1 $W/st.csv | tr ';' '\n' | sed -n "${col}p")
  echo "$T $RATE calls/s: ${ok:-0}/$CALLS calls, ${total} µs of CPU, $(echo "scale=1; $total/${ok:-1}" | bc) µs per call"
fi
