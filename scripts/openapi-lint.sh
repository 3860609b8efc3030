#!/usr/bin/env bash
# Lint the OpenAPI contracts with Redocly CLI (rules in redocly.yaml): docs/openapi.yaml, the
# management API, and docs/instance-api.yaml, the instance API of workflow programs.
#
# Redocly CLI is installed with npm, once, into a cache directory outside the source tree,
# ${XDG_CACHE_HOME:-$HOME/.cache}/runtara/redocly/<version>, and reused afterwards. Needs node
# and npm (scripts/install-deps.sh --lint; Debian 12's nodejs 18 runs it, with a warning about
# the Node.js version that is not shown on success). Prints one line on success; on a lint error
# the report and a non-zero exit status.
set -euo pipefail
cd "$(dirname "$0")/.."

REDOCLY_VERSION=2.77.0
specs=(docs/openapi.yaml docs/instance-api.yaml)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/runtara/redocly"
prefix="$cache/$REDOCLY_VERSION"
bin="$prefix/node_modules/.bin/redocly"

need() {
    if ! command -v "$1" >/dev/null; then
        echo "openapi-lint: $1 is not installed" >&2
        echo "hint: run scripts/install-deps.sh --lint" >&2
        exit 1
    fi
}

need node
if [[ ! -x "$bin" ]]; then
    need npm
    mkdir -p "$cache"
    # Install next to the final place and rename it there, so that an interrupted install never
    # leaves a half-filled directory that looks installed.
    tmp=$(mktemp -d "$cache/.install.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo '{"private": true}' >"$tmp/package.json" # keeps npm from using a parent's package.json
    if ! npm install --prefix "$tmp" --no-fund --no-audit --no-update-notifier --loglevel=error \
        "@redocly/cli@$REDOCLY_VERSION" >"$tmp/npm-install.log" 2>&1; then
        cat "$tmp/npm-install.log" >&2
        echo "openapi-lint: could not install @redocly/cli@$REDOCLY_VERSION with npm" >&2
        exit 1
    fi
    if [[ ! -x "$tmp/node_modules/.bin/redocly" ]]; then
        cat "$tmp/npm-install.log" >&2
        echo "openapi-lint: npm installed no redocly command" >&2
        exit 1
    fi
    rm -rf "$prefix"
    mv "$tmp" "$prefix"
    trap - EXIT
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
report() {
    # without Redocly's framed notice about the Node.js version
    grep -vE '^ *[╔║╚]' "$out" >&2 || true
}
# No telemetry and no update check in a lint run.
if ! REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1 \
    "$bin" lint "${specs[@]}" --config redocly.yaml --format=stylish >"$out" 2>&1; then
    report
    echo "openapi-lint: ${specs[*]}: errors (Redocly CLI $REDOCLY_VERSION, rules in redocly.yaml)" >&2
    exit 1
fi
# Warnings do not fail the run, but they are shown.
if grep -qE 'You have [0-9]+ warnings?' "$out"; then
    report
fi
echo "openapi-lint: ${specs[*]} ok (Redocly CLI $REDOCLY_VERSION)"
