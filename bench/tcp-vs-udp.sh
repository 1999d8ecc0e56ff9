#!/bin/bash
# Run from anywhere after `cargo build --release -p sbc-controlplane`; needs sipp and bc.
# RATE (calls/s) and CALLS set the load; one shard; prints sbc CPU µs per call, alternating udp/tcp.
# CPU per call of the sbc, both legs over UDP vs both legs over TCP (sipp -t t1, one reused connection each side), same run.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SBC=${SBC:-$ROOT/target/release/sbc}
S=$ROOT/loadtest/scenarios
N=127.88.0
RATE=${RATE:-300}; CALLS=${CALLS:-6000}
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for T in udp tcp udp tcp; do
  D=$(mktemp -d); cd $D
  cat > sbc.toml <<CFG
[sip]
listen = ["$N.1:5060", "tcp:$N.1:5060"]
[shards]
count = 1
pin_threads = false
[metrics]
listen = "$N.1:9090"
[[trunks]]
name = "pbx"
sources = ["$N.10"]
address = "$N.10:5060"
transport = "$T"
[[trunks]]
name = "carrier"
sources = ["$N.20"]
address = "$N.20:5060"
transport = "$T"
[[routes]]
name = "out"
from = ["pbx"]
numbers = ["*"]
targets = [{ trunk = "carrier" }]
CFG
  RUST_LOG=warn $SBC --config sbc.toml 2>sbc.log & P=$!
  sleep 1
  ST=u1; [ $T = tcp ] && ST=t1
  sipp -sf $S/uas_answer.xml -i $N.20 -p 5060 -t $ST -m $CALLS -mp 47800 -cp 47810 -bg -nostdin >/dev/null 2>&1
  sleep 0.5
  C0=$(ticks $P)
  sipp -sf $S/uac_basic.xml -s 15550100 -i $N.10 -p 5060 $N.1:5060 -t $ST -r $RATE -m $CALLS -d 1000 -mp 47820 -cp 47830 -nostdin -trace_stat -stf st.csv -timeout 120 >/dev/null 2>&1
  C1=$(ticks $P)
  OK=$(tail -1 st.csv | awk -F';' '{print $0}' | tr ';' '\n' | sed -n "$(head -1 st.csv | tr ';' '\n' | grep -n '^SuccessfulCall(C)$' | cut -d: -f1)p")
  HZ=$(getconf CLK_TCK)
  echo "$T: calls_ok=$OK sbc_cpu_s=$(echo "scale=2; ($C1-$C0)/$HZ" | bc) us_per_call=$(echo "scale=1; ($C1-$C0)*1000000/$HZ/$OK" | bc)"
  kill $P; pkill -f "sipp -sf $S/uas_answer.xml -i $N.20" ; sleep 1
  cd /; rm -rf $D
done
