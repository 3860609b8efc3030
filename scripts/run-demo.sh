#!/usr/bin/env bash
# `make run`: start runtara-environment on its embedded default (SQLite in ./.data), register the
# demo workflow (examples/sdk-workflow) with runtara-ctl, run an instance of it to completion,
# show its status, events and checkpoints, and keep the daemon in the foreground until Ctrl-C. RUNTARA_ENV_HTTP_PORT, DATA_DIR and RUNTARA_LOG_LEVEL (default notice here) are honoured.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."

export DATA_DIR=${DATA_DIR:-.data}
export RUNTARA_ENV_HTTP_PORT=${RUNTARA_ENV_HTTP_PORT:-8002}
export RUNTARA_LOG_LEVEL=${RUNTARA_LOG_LEVEL:-notice}
export RUNTARA_URL=${RUNTARA_URL:-http://127.0.0.1:$RUNTARA_ENV_HTTP_PORT}
ctl="$build/runtara-ctl"

"$build/runtara-environment" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon' INT TERM

for _ in $(seq 100); do
    "$ctl" health >/dev/null 2>&1 && break
    kill -0 $daemon 2>/dev/null || { wait $daemon; exit 1; }
    sleep 0.1
done

echo
echo "== runtara-ctl health"
"$ctl" health
echo
echo "== registering the demo workflow (examples/sdk-workflow, written with libruntara)"
"$ctl" images register "$build/src/sdk/sdk-workflow" --tenant demo --name hello-workflow \
    --runner native --description "the demo workflow" --label source=examples
echo
echo "== starting an instance and waiting for it to finish"
"$ctl" instances start --image hello-workflow --tenant demo \
    --input '{"name": "ada", "steps": 3, "step_ms": 200}' --wait 60
id=$("$ctl" instances list --tenant demo --limit 1 --json |
     sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' | head -1)
echo
echo "== runtara-ctl instances events $id"
"$ctl" instances events "$id"
echo
echo "== runtara-ctl instances checkpoints $id"
"$ctl" instances checkpoints "$id"
echo
echo "== the same workflow, linked statically, in a container (the oci runner)"
"$ctl" images register "$build/src/sdk/sdk-workflow-static" --tenant demo \
    --name hello-container --runner oci --description "the demo workflow, isolated" >/dev/null
if ! "$ctl" instances start --image hello-container --tenant demo \
    --input '{"name": "grace", "steps": 3}' --wait 60; then
    echo "(the oci runner cannot run containers here: the daemon's log says why;"
    echo " docs/operations.md#isolation)"
fi
cat <<EOT

The daemon is running on $RUNTARA_URL (data in $DATA_DIR).
Its web console: $RUNTARA_URL/ui (instances, timelines, images, tenant metrics, health).
Try, in another terminal:
    $ctl instances start --image hello-workflow --tenant demo --input '{"steps": 20, "step_ms": 500}'
    $ctl instances list
    $ctl instances signal <id> pause;  $ctl instances resume <id>
    curl -s $RUNTARA_URL/metrics
Press Ctrl-C to stop it.
EOT
wait $daemon
