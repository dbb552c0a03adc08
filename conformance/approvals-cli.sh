#!/usr/bin/env bash
# Conformance: the four-eyes approval flow from the command line. A template that needs
# approval holds an API request (202); the requester cannot approve it; a second manager,
# created with `rampart apikeys create`, lists and approves it; the certificate is issued.
source "$(dirname "$0")/lib.sh"

DIR="$WORK/ra"
API_PORT="$(free_port)"
mkdir -p "$DIR"
printf '[server]\ndata_dir = "%s"\n[api]\nlisten = "127.0.0.1:%s"\n' "$DIR" "$API_PORT" >"$DIR/rampart.toml"
API="http://127.0.0.1:$API_PORT"
export RAMPART__TEMPLATES__SERVER__APPROVAL_REQUIRED=true
start_rampart "$DIR/rampart.toml"
KEY="$(grep -o 'rpk_[A-Za-z0-9_-]*' "$WORK/rampart.out")"
CLI=("$RAMPART" --log-format text)

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=held.example" \
    -addext "subjectAltName=DNS:held.example" -out "$WORK/held.csr" 2>/dev/null
[[ "$(enroll "$WORK/held.csr" server)" == 202 ]] || fail "a held request answered $(cat "$WORK/resp.json")"
REQUEST="$(jq -r .request_id "$WORK/resp.json")"

BOB="$(RAMPART_API_KEY="$KEY" "${CLI[@]}" apikeys create --config "$DIR/rampart.toml" --identity bob --role admin | grep -o 'rpk_[A-Za-z0-9_-]*')" \
    || fail "apikeys create"
RAMPART_API_KEY="$BOB" "${CLI[@]}" approvals list --config "$DIR/rampart.toml" | matches "$REQUEST" || fail "approvals list"
if RAMPART_API_KEY="$KEY" "${CLI[@]}" approvals approve "$REQUEST" --config "$DIR/rampart.toml" 2>"$WORK/self.err"; then
    fail "the requester approved their own request"
fi
grep -q "own requests" "$WORK/self.err" || fail "self-approval refused without saying why: $(cat "$WORK/self.err")"
RAMPART_API_KEY="$BOB" "${CLI[@]}" approvals approve "$REQUEST" --config "$DIR/rampart.toml" >"$WORK/approve.out" \
    || fail "bob could not approve"
SERIAL="$(grep -o 'certificate [0-9a-f]*' "$WORK/approve.out" | cut -d' ' -f2)"
curl -sf -H "Authorization: Bearer $KEY" "$API/api/v1/certificates/$SERIAL" \
    | jq -e '.owner == "admin" and .metadata.approved_by == "bob"' >/dev/null || fail "the approved certificate is not recorded as such"
pass "held request (202) → requester cannot approve → second manager approves → issued, recorded with approver"
stop_rampart
