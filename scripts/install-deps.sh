#!/usr/bin/env bash
# Install the Debian 12 packages the build, the tests (strace: a durability test reads the
# daemon's system calls; openssl: the TLS test makes its certificates; crun and runc: the OCI
# runner's tests run containers under both; golang-github-opencontainers-specs-dev: the OCI
# runtime-spec JSON schema that generated config.json files are validated against) and the demo
# need, if any is missing, then, as root, prepares the host for containers (scripts/setup-host.sh).
# As root it runs apt-get; otherwise it prints the command to run. --lint adds what `make lint`
# needs, --bench what `make bench` needs (wrk, gnuplot-nox), --fuzz what `make fuzz` needs (clang
# and its libFuzzer and sanitizer runtimes, zzuf).
set -euo pipefail

packages=(
    gcc make pkg-config meson ninja-build
    libmicrohttpd-dev libjansson-dev libsqlite3-dev libpq-dev libsystemd-dev libgnutls28-dev
    libseccomp-dev
    libcurl4-openssl-dev libhttp-parser-dev
    curl python3 python3-jsonschema python3-yaml strace openssl groff-base man-db
    crun runc golang-github-opencontainers-specs-dev
    chromium chromium-driver python3-selenium
    postgresql postgresql-client
)
if [[ "${1:-}" == "--bench" ]]; then
    packages+=(wrk gnuplot-nox)
fi
if [[ "${1:-}" == "--fuzz" ]]; then
    packages+=(clang libclang-rt-14-dev zzuf)
fi
if [[ "${1:-}" == "--deb" ]]; then
    packages+=(debhelper dpkg-dev systemd)
fi
if [[ "${1:-}" == "--lint" ]]; then
    packages+=(clang-format)
    # Node.js may come from elsewhere (NodeSource bundles npm and conflicts with Debian's npm):
    # ask for the commands, not the packages.
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        packages+=(nodejs npm)
    fi
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    [[ $(id -u) -ne 0 ]] || "$(dirname "$0")/setup-host.sh"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages: ${missing[*]}" >&2
    echo "hint: run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
"$(dirname "$0")/setup-host.sh"
