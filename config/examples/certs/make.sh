#!/bin/sh
# Makes the TEST certificates the example configurations and the tests use:
# a test CA and, signed by it, certificates for
#   localhost     the SBC's TLS listeners (DNS:localhost, IP:127.0.0.1)
#   itsp          the ITSP of tls-trunk.toml (DNS:itsp.example)
#   sbc-client    what the SBC presents to that ITSP (mutual TLS)
#   revoked       like localhost, but revoked: ca.crl (the CA's revocation
#                 list) names it (sbc-load's -tls_crl tests)
# Every private key here is public: never use these outside tests.
#
# Run from anywhere:  sh config/examples/certs/make.sh
set -eu
cd "$(dirname "$0")"
days=36500

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.crt -days "$days" -subj "/CN=SBC example test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"

leaf() { # name, subjectAltName
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$1.crt" -days "$days" -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}

leaf localhost "DNS:localhost,IP:127.0.0.1"
leaf itsp "DNS:itsp.example"
leaf sbc-client "DNS:sbc.example"
leaf revoked "DNS:localhost,IP:127.0.0.1"
rm -f ca.srl

# The CA's revocation list, naming "revoked" (openssl ca keeps its state in
# a scratch directory).
crl=$(mktemp -d)
touch "$crl/index.txt"
echo 01 > "$crl/crlnumber"
printf '%s\n' "[ca]" "default_ca=test" "[test]" "database=$crl/index.txt" \
  "crlnumber=$crl/crlnumber" "default_md=sha256" "default_crl_days=$days" > "$crl/ca.cnf"
openssl ca -config "$crl/ca.cnf" -keyfile ca.key -cert ca.crt -revoke revoked.crt
openssl ca -config "$crl/ca.cnf" -keyfile ca.key -cert ca.crt -gencrl -out ca.crl
rm -rf "$crl"
