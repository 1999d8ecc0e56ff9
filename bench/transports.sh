#!/bin/bash
# CPU per call over UDP, TCP and TLS, for the sbc and for Kamailio run as
# its users run it for speed (tlsf allocator, one worker of each kind, like
# one sbc shard), in the same run; then TLS handshakes: CPU per handshake
# and handshakes/s, for both.
#
# Each call: INVITE/180/200/ACK, 1 s, BYE/200 (loadtest/scenarios
# uac_basic.xml, uas_answer.xml), caller and callee on one reused
# connection each (sipp -t t1). sipp has no TLS here, so over TLS both
# sides are sbc-load (-t l1, one thread: one connection each); only the
# proxy's own CPU is counted.
# The sbc is a B2BUA (two transactions, two dialogs per call), Kamailio a
# stateful record-routing proxy with dialog tracking (bench/kamailio).
#
# Run from anywhere after
# `cargo build --release -p sbc-controlplane -p sbc-loadtest`:
#   bench/transports.sh            # RATE=300 calls/s, CALLS=6000, ROUNDS=2
#   (BATCH_WAIT_US=N sets the sbc's shards.batch_wait_us and
#   media_batch_wait_us; default: its own)
# Installs sipp, kamailio and kamailio-tls-modules when missing.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SBC=${SBC:-$ROOT/target/release/sbc}
LOAD=${LOAD:-$ROOT/target/release/sbc-load}
S=$ROOT/loadtest/scenarios
CERTS=$ROOT/config/examples/certs
N=127.89.0
RATE=${RATE:-300}; CALLS=${CALLS:-6000}; ROUNDS=${ROUNDS:-2}; HS_SECONDS=${HS_SECONDS:-10}
HZ=$(getconf CLK_TCK)
. "$ROOT/bench/sbc-bench-config.sh"

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need sipp sip-tester; need kamailio kamailio; need bc bc
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio-tls-modules >/dev/null
[ -x "$SBC" ] && [ -x "$LOAD" ] || { echo "build first: cargo build --release -p sbc-controlplane -p sbc-loadtest" >&2; exit 1; }

# CPU ticks (user + system) of the processes whose command line matches $1.
ticks() { local t=0; for p in $(pgrep -f "$1"); do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
cleanup() { pkill -f "sipp -sf $S" 2>/dev/null; pkill -f "$LOAD .*-sf $S" 2>/dev/null; pkill -f "kamailio -f $W" 2>/dev/null; [ -n "${P:-}" ] && kill $P 2>/dev/null; sleep 1; }

start_sbc() { # transport
  local T=$1 port=5060 tls=""
  [ $T = tls ] && { port=5061; tls="tls = { ca = \"$CERTS/ca.crt\", server_name = \"localhost\" }"; }
  sbc_bench_config "$T" "$port" "$tls" "${BATCH_WAIT_US:+batch_wait_us = $BATCH_WAIT_US
media_batch_wait_us = $BATCH_WAIT_US}" > $W/sbc.toml
  RUST_LOG=warn $SBC --config $W/sbc.toml 2>$W/sbc.log & P=$!
  MATCH="$SBC --config $W/sbc.toml"
}

start_kamailio() { # transport
  local T=$1 port=5060 def=""
  [ $T = tls ] && { port=5061; def="-A WITH_TLS"; }
  cat > $W/tls.cfg <<TLS
[server:default]
method = TLSv1.2+
certificate = $CERTS/localhost.crt
private_key = $CERTS/localhost.key
verify_certificate = no
require_certificate = no
[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
TLS
  if [ $T = udp ]; then
    sed -e "s/@LISTEN@/$N.1/; s/@TARGET@/$N.20/" $ROOT/bench/kamailio/proxy.cfg > $W/k.cfg
  else
    sed -e "s/@LISTEN@/$N.1/; s/@PORT@/$port/; s/@PROTO@/$T/g; s/@TARGET@/$N.20:$port/g; s/@CALLEE_HOST@/$N.20/; s#@TLSCFG@#$W/tls.cfg#" \
      $ROOT/bench/kamailio/proxy-streams.cfg > $W/k.cfg
  fi
  kamailio -f $W/k.cfg $def -DD -E -m 256 -M 32 -x tlsf -X tlsf -Y $W >$W/k.log 2>&1 & P=$!
  MATCH="kamailio -f $W/k.cfg"
}

run() { # target transport
  local target=$1 T=$2 st=u1 to=$N.1:5060 from=$N.10
  W=$(mktemp -d)
  [ $T != udp ] && st=t1
  # Callee on $N.20 (5060; 5061 for tls), caller from $N.10: sipp, or
  # sbc-load over TLS (same scenarios, same statistics file).
  local gen=sipp tls_args=""
  if [ $T = tls ]; then
    gen="$LOAD --threads 1"; st=l1; to=$N.1:5061
    tls_args="-tls_cert $CERTS/localhost.crt -tls_key $CERTS/localhost.key"
    $gen -sf $S/uas_answer.xml -i $N.20 -p 5061 -t $st $tls_args -m $CALLS -mp 47800 -cp 47810 -bg -nostdin >/dev/null 2>&1
  else
    sipp -sf $S/uas_answer.xml -i $N.20 -p 5060 -t $st -m $CALLS -mp 47800 -cp 47810 -bg -nostdin >/dev/null 2>&1
  fi
  start_$target $T
  sleep 1.5
  local c0; c0=$(ticks "$MATCH")
  $gen -sf $S/uac_basic.xml -s 15550100 -i $from -p 5060 $to -t $st $tls_args -r $RATE -m $CALLS -d 1000 \
    -mp 47820 -cp 47830 -nostdin -trace_stat -stf $W/st.csv -timeout 180 >/dev/null 2>&1
  local c1; c1=$(ticks "$MATCH")
  local col; col=$(head -1 $W/st.csv | tr ';' '\n' | grep -n '^SuccessfulCall(C)$' | cut -d: -f1)
  local ok; ok=$(tail -1 $W/st.csv | tr ';' '\n' | sed -n "${col}p")
  echo "$target $T: calls_ok=$ok/$CALLS cpu_s=$(echo "scale=2; ($c1-$c0)/$HZ" | bc) us_per_call=$(echo "scale=1; ($c1-$c0)*1000000/$HZ/${ok:-1}" | bc)"
  cleanup; rm -rf $W
}

handshakes() { # target
  local target=$1
  W=$(mktemp -d)
  start_$target tls
  sleep 1.5
  local c0; c0=$(ticks "$MATCH")
  local out; out=$(openssl s_time -connect $N.1:5061 -new -time $HS_SECONDS 2>/dev/null | grep "real seconds" | head -1)
  local c1; c1=$(ticks "$MATCH")
  local n; n=$(echo "$out" | awk '{print $1}')
  echo "$target tls handshakes: $out; server cpu_us_per_handshake=$(echo "scale=1; ($c1-$c0)*1000000/$HZ/${n:-1}" | bc)"
  cleanup; rm -rf $W
}

W=/nonexistent
for r in $(seq 1 $ROUNDS); do
  for T in udp tcp tls; do
    run sbc $T
    run kamailio $T
  done
done
handshakes sbc
handshakes kamailio
