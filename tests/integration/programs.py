"""Workflow programs of the tests, as shell scripts that speak the instance API with curl over
the unix socket (docs/instance-api.md): test_instances.py and test_console.py."""

# What every program starts with: its token, the API, and a few helpers of the protocol.
PRELUDE = r'''#!/bin/sh
export RUNTARA_INSTANCE_TOKEN="$(cat <&"$RUNTARA_INSTANCE_TOKEN_FD")"  # its pipe
set -eu
sock=${RUNTARA_SERVER_ADDR#unix:}
api() { curl -sf --unix-socket "$sock" -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \
        "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID$@"; }
# the pending control signal, from the headers of a heartbeat
signal_of() { curl -sf -D - -o /dev/null -X POST --unix-socket "$sock" \
        -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \
        "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID/heartbeat" |
        tr -d '\r' | sed -n 's/^Runtara-Signal: //ip'; }
ack() { api /signals/ack -X POST -H 'Content-Type: application/json' -d "{\"type\":\"$1\"}"; }
complete() { api /completed -X POST -H 'Content-Type: application/json' -d "{\"output\": $1}" >/dev/null; }
# step N: run once (append to steps.log, where $OUT points), then checkpoint; replay afterwards
step() {
    if r=$(api /checkpoints/step$1 2>/dev/null); then echo "$r"; return; fi
    echo "step $1" >> "$OUT/steps.log"
    api /checkpoints/step$1 -X PUT -H 'Content-Type: application/octet-stream' --data-binary "result-$1"
}
api /register -X POST >/dev/null
'''

# Loops over three checkpointed steps, acting on a cancel or pause at each check (it
# acknowledges and exits), and completes at once on a later attempt.
LOOP = r'''
echo $$ > "$OUT/pid"
i=0
while [ $i -lt 600 ]; do
    s=$(signal_of)
    if [ "$s" = cancel ] || [ "$s" = pause ]; then echo "$s" >> "$OUT/acked"; ack "$s"; exit 0; fi
    [ "$RUNTARA_ATTEMPT" -gt 1 ] && break
    step $((i % 3 + 1)) >/dev/null
    touch "$OUT/looping"
    i=$((i+1)); sleep 0.05
done
complete "{\"attempt\": $RUNTARA_ATTEMPT}"
'''
