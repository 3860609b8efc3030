#!/bin/sh
# A workflow program in shell: the instance API (docs/instance-api.md) spoken with curl alone,
# as docs/sdk.md describes. It registers, reads its name from the input, saves one checkpoint
# holding the greeting (on a relaunch the save answers 200 with the greeting saved first, so the
# step replays), and completes with {"greeting": "hello <name>"}. If the checkpoint's reply
# announces a cancel or pause, it acknowledges it and exits 0 instead.
#
# RUNTARA_SERVER_ADDR may be unix:/path, /path or host:port.
set -eu

case $RUNTARA_SERVER_ADDR in
unix:*) sock=${RUNTARA_SERVER_ADDR#unix:}; host=runtara ;;
/*) sock=$RUNTARA_SERVER_ADDR; host=runtara ;;
*) sock=; host=$RUNTARA_SERVER_ADDR ;;
esac
base=http://$host/api/v1/instances/$RUNTARA_INSTANCE_ID
# the runners pass the token in a pipe, never in the environment, which other processes of the
# same user can read: fd 4 natively (a shell can only name a literal descriptor)
if [ "${RUNTARA_INSTANCE_TOKEN_FD:-}" = 4 ]; then
    RUNTARA_INSTANCE_TOKEN=$(cat <&4)
fi

# api PATH [CURL-ARGS...]: one call; fails (and so ends the script) on an error status.
api() {
    path=$1
    shift
    if [ -n "$sock" ]; then
        set -- --unix-socket "$sock" "$@"
    fi
    curl -sSf --noproxy '*' -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" "$@" "$base$path"
}

headers=$(mktemp)
trap 'rm -f "$headers"' EXIT

api /register -X POST >/dev/null
name=$(api /input | sed -n 's/.*"name" *: *"\([^"]*\)".*/\1/p')

greeting=$(api /checkpoints/greet -X PUT -D "$headers" \
           -H 'Content-Type: application/octet-stream' --data-binary "hello ${name:-world}")
echo "shell-workflow: checkpoint greet $(sed -n 's/^[Rr]untara-[Cc]heckpoint: *\([a-z]*\).*/\1/p' "$headers")" >&2

signal=$(sed -n 's/^[Rr]untara-[Ss]ignal: *\([a-z]*\).*/\1/p' "$headers")
case $signal in
cancel | pause)
    api /signals/ack -X POST -H 'Content-Type: application/json' -d "{\"type\": \"$signal\"}"
    echo "shell-workflow: $signal requested, stopping" >&2
    exit 0
    ;;
esac

api /completed -X POST -H 'Content-Type: application/json' \
    -d "{\"output\": {\"greeting\": \"$greeting\"}}" >/dev/null
