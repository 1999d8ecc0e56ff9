#!/bin/bash
# How much of the sbc's CPU per call at 1,000 calls/s is the machine's
# price for waking an idle CPU, not the sbc's work:
#  1. `wakecost sleep`: CPU charged per wake-up by how long a thread slept;
#  2. `wakecost peer`: CPU a send charges its sender when it wakes a
#     receiver asleep on the other CPU;
#  3. loadbench at 1,000 calls/s (one shard on CPU 0, the load on CPU 1),
#     alternating a plain run with one where `wakecost warm` naps on CPU 0
#     every 200 µs, so that CPU never idles long. The napper's own CPU is
#     not counted: only the sbc's is.
#  4. the same with Kamailio and the floor in each run (--compare kamailio
#     --floor), plain then warm: the ratios the goals are stated in.
# Run from anywhere after
#   cargo build --release -p sbc-bench -p sbc-controlplane -p sbc-loadtest
#   bench/vm-wakeups.sh            # ROUNDS=2, SECONDS_PER_RUN=15
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
ROUNDS=${ROUNDS:-2}; SECS=${SECONDS_PER_RUN:-15}
command -v kamailio >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio >/dev/null; }
for b in wakecost loadbench sbc sbc-load relaycost; do
  [ -x "$BIN/$b" ] || { echo "build first: cargo build --release -p sbc-bench -p sbc-controlplane -p sbc-loadtest" >&2; exit 1; }
done
echo "## Wake-up cost by sleep length (wakecost sleep, CPU 0)"; echo
"$BIN/wakecost" sleep --cpu 0
echo; echo "## Waking a peer (wakecost peer, sender on CPU 0, receiver on CPU 1)"; echo
"$BIN/wakecost" peer --cpu 0 --peer-cpu 1
echo; echo "## sbc at 1,000 calls/s, ${SECS} s runs (loadbench --split-cores)"; echo
echo "| round | plain: proxy CPU µs/call | CPU 0 kept warm: proxy CPU µs/call |"
echo "|---|---|---|"
cpu() { # extra loadbench output -> the sbc's µs per call
  "$BIN/loadbench" --rates 1000 --seconds "$SECS" --split-cores 2>/dev/null | awk -F'|' '/^\| Sbc/ {gsub(/ /, "", $9); print $9}'
}
for r in $(seq 1 "$ROUNDS"); do
  plain=$(cpu)
  "$BIN/wakecost" warm --cpu 0 --period-us 200 --seconds $((SECS + 30)) & W=$!
  warm=$(cpu)
  kill $W 2>/dev/null; wait $W 2>/dev/null
  echo "| $r | ${plain:-failed} | ${warm:-failed} |"
done
echo; echo "## With Kamailio and the floor in the same run (${SECS} s)"; echo
echo "| | sbc µs/call | Kamailio µs/call | floor µs/call |"
echo "|---|---|---|---|"
compare() {
  "$BIN/loadbench" --rates 1000 --seconds "$SECS" --split-cores --floor --compare kamailio 2>/dev/null |
    awk -F'|' '/^\| Sbc / {gsub(/ /, "", $9); s=$9} /^\| Kamailio / {gsub(/ /, "", $9); k=$9} /^\| 1000 \| [0-9.]+ \| Sbc/ {gsub(/ /, "", $3); f=$3} END {print s " | " k " | " f}'
}
echo "| plain | $(compare) |"
"$BIN/wakecost" warm --cpu 0 --period-us 200 --seconds $((SECS * 4 + 60)) & W=$!
echo "| CPU 0 kept warm | $(compare) |"
kill $W 2>/dev/null; wait $W 2>/dev/null
