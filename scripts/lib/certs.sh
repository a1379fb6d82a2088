# Test certificates made with openssl, for the test engines (scripts/dind) and the test
# registries (scripts/test-swarm). Sourced, not run. Keys are RSA 2048; everything is valid for
# two days: these are throw-away test identities, never anything to trust beyond a test run.

# One certificate signed by a CA. $1 out dir, $2 file stem, $3 CA dir, $4 subject CN, $5 extensions.
sign() {
  local dir=$1 stem=$2 ca=$3 cn=$4 ext=$5
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$stem-key.pem" 2>/dev/null
  openssl req -new -key "$dir/$stem-key.pem" -subj "/CN=$cn" -out "$dir/$stem.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$dir/$stem.ext"
  openssl x509 -req -in "$dir/$stem.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 8)" -days 2 -sha256 -extfile "$dir/$stem.ext" \
    -out "$dir/$stem-cert.pem" 2>/dev/null
  rm -f "$dir/$stem.csr" "$dir/$stem.ext"
}

make_ca() {
  local dir=$1 cn=$2
  mkdir -p "$dir"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/ca-key.pem" 2>/dev/null
  cat >"$dir/ca.cnf" <<EOF
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = $cn
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl req -x509 -new -key "$dir/ca-key.pem" -config "$dir/ca.cnf" -days 2 -sha256 \
    -out "$dir/ca.pem" 2>/dev/null
  rm -f "$dir/ca.cnf"
}
