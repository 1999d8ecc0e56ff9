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
# Run from anywhere after
#   cargo build --release -p sbc-bench -p sbc-controlplane -p sbc-loadtest
#   bench/vm-wakeups.sh            # ROUNDS=2, SECONDS_PER_RUN=15
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
ROUNDS=${ROUNDS:-2}; SECS=${SECONDS_PER_RUN:-15}
for b in wakecost loadbench sbc sbc-load; do
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
