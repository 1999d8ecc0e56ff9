# Sourced by bench/transports.sh and bench/wakeups.sh: the sbc
# configuration both run. One unpinned shard on $N.1 listening on UDP, TCP
# (5060) and TLS (5061) with the example certificate under $CERTS, a pbx
# trunk at $N.10:5060 and a carrier trunk at $N.20, both over transport
# $1, every call from the pbx to the carrier; metrics on $N.1:9090.
#   $2  the carrier's port
#   $3  a line more for each trunk (e.g. its tls = { ... }), or ""
#   $4  more [shards] lines, or ""
sbc_bench_config() {
  cat <<CFG
[sip]
listen = ["$N.1:5060", "tcp:$N.1:5060", "tls:$N.1:5061"]
[sip.tls]
certificate = "$CERTS/localhost.crt"
key = "$CERTS/localhost.key"
[shards]
count = 1
pin_threads = false
$4
[metrics]
listen = "$N.1:9090"
[[trunks]]
name = "pbx"
sources = ["$N.10"]
address = "$N.10:5060"
transport = "$1"
$3
[[trunks]]
name = "carrier"
sources = ["$N.20"]
address = "$N.20:$2"
transport = "$1"
$3
[[routes]]
name = "out"
from = ["pbx"]
numbers = ["*"]
targets = [{ trunk = "carrier" }]
CFG
}
