#!/usr/bin/env bash
# Conformance: the built-in CA with each selectable key algorithm (ECDSA P-384, RSA 3072;
# P-256 is the default covered elsewhere), selected by an environment override at init.
# Certificates it issues verify with openssl, and the CA certificates say what they are.
source "$(dirname "$0")/lib.sh"

declare -A EXPECT=([ecdsa-p384]="NIST CURVE: P-384" [rsa-3072]="Public-Key: (3072 bit)")
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=svc.internal" \
    -addext "subjectAltName=DNS:svc.internal" -out "$WORK/svc.csr" 2>/dev/null
for algorithm in ecdsa-p384 rsa-3072; do
    DIR="$WORK/$algorithm"
    RAMPART__CA__KEY_ALGORITHM="$algorithm" "$RAMPART" init --dir "$DIR" >"$WORK/init.out" 2>/dev/null || fail "init $algorithm"
    KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/init.out")"
    for cert in root issuing; do
        openssl x509 -in "$DIR/ca/$cert.cert.pem" -noout -text | matches -F "${EXPECT[$algorithm]}" \
            || fail "$algorithm: $cert CA key is not ${EXPECT[$algorithm]}"
        [[ "$(stat -c %a "$DIR/ca/$cert.key.pem")" == 600 ]] || fail "$algorithm: $cert key not 0600"
    done
    openssl x509 -in "$DIR/ca/issuing.cert.pem" -noout -text | matches "CA:TRUE, pathlen:0" || fail "issuing CA constraints"
    PORT="$(free_port)"
    API="http://127.0.0.1:$PORT"
    RAMPART__API__LISTEN="127.0.0.1:$PORT" start_rampart "$DIR/rampart.toml"
    [[ "$(enroll "$WORK/svc.csr" server)" == 201 ]] || fail "$algorithm: enrollment: $(cat "$WORK/resp.json")"
    jq -r .full_chain "$WORK/resp.json" >"$WORK/svc.pem"
    openssl verify -CAfile "$DIR/ca-bundle.pem" -untrusted "$WORK/svc.pem" "$WORK/svc.pem" >/dev/null || fail "$algorithm: verify"
    stop_rampart
    pass "$algorithm CA: root and issuing CA of that type, issued certificate verifies"
done
