#!/usr/bin/env bash
# Instructions the B2BUA engine executes per zero-second call (INVITE, 200,
# ACK, BYE, 200 with media anchored: `callmem cpu`), counted by callgrind;
# with MODE=register, per digest registration (REGISTER, 401, REGISTER with
# credentials, 200: `callmem register`).
# Unlike a time, the count does not move with the machine's noise, so two
# builds compare exactly. Needs valgrind (apt-get install -y valgrind).
#   cargo build --release -p sbc-bench --bin callmem
#   [MODE=register] bench/engine-instructions.sh [path/to/callmem]
set -euo pipefail
bin=${1:-target/release/callmem}
calls=${CALLS:-500}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if [ "${MODE:-call}" = register ]; then
  what="digest registration"
  CALLMEM_REGISTRATIONS=$calls valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" register >/dev/null 2>&1
else
  what="zero-second call"
  CALLMEM_CALLS=$calls valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" cpu >/dev/null 2>&1
fi
# Both run 16 warm-up rounds and 5 measured ones of $calls each.
# A function inlined into others is listed once per source file; its
# total is the largest of its lines.
callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk -v n=$((calls * 21)) -v what="$what" '
  match($0, /Engine>::(handle_datagram|poll_transmit|handle_timeout|poll_event)/) {
    f = substr($0, RSTART, RLENGTH); v = $1; gsub(",", "", v)
    if (v + 0 > max[f]) max[f] = v + 0
  }
  END { for (f in max) ir += max[f]; printf "engine instructions per %s: %.0f\n", what, ir / n }'
