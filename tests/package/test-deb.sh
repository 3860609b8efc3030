#!/bin/bash
# The Debian package (make deb), installed on this machine as an operator would: apt installs it
# with its dependencies and its user; its files are in place; its unit passes systemd-analyze; the
# daemon started the way the unit starts it (its user, DATA_DIR, Type=notify) serves health and
# the console, runs a workflow to completion through the installed shim, and stops on SIGTERM;
# apt's purge then leaves no file, no user and no process. Needs root.
#
#   tests/package/test-deb.sh build-deb/runtara-environment_*.deb
#
# Where systemd runs (not in a container without it), systemctl starts and stops the service too.
# Ends with "N passed, N failed".
set -uo pipefail
deb=$(realpath "$1")
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "not ok - $1"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@" >/tmp/deb-check.log 2>&1; then ok "$what"; else fail "$what"; sed 's/^/# /' /tmp/deb-check.log; fi; }
finish() { echo "$passed passed, $failed failed"; [[ $failed -eq 0 ]]; exit; }

[[ $(id -u) -eq 0 ]] || { echo "test-deb: needs root (it installs the package)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
unit=/lib/systemd/system/runtara-environment.service
port=18372
url=http://127.0.0.1:$port
systemd=false
[[ -d /run/systemd/system ]] && systemd=true

apt-get remove --purge -y -qq runtara-environment >/dev/null 2>&1
check "apt installs the package and its dependencies" apt-get install -y -qq "$deb"
check "the daemon, its shim next to it, the CLI and the OCI check are installed" \
    test -x /usr/bin/runtara-environment -a -x /usr/bin/runtara-shim -a -x /usr/bin/runtara-ctl \
    -a -x /usr/libexec/runtara-oci-check
check "the manual pages are found by man" man -w runtara-environment runtara-ctl
check "the bash completion is installed" test -f /usr/share/bash-completion/completions/runtara-ctl
check "the SDK is found by pkg-config" pkg-config --exists runtara
check "the user runtara is a system user" bash -c '[[ $(id -u runtara) -lt 1000 ]]'
check "the unit passes systemd-analyze verify" systemd-analyze verify "$unit"
check "the unit is enabled" test -L /etc/systemd/system/multi-user.target.wants/runtara-environment.service
check "the unit runs the installed binary as runtara, Type=notify" \
    grep -qx -e "ExecStart=/usr/bin/runtara-environment" "$unit"
grep -qx "Type=notify" "$unit" && grep -qx "User=runtara" "$unit" && ok "Type=notify, User=runtara" ||
    fail "Type=notify, User=runtara"

# the daemon as the unit starts it
if $systemd; then
    mkdir -p /etc/runtara
    echo "RUNTARA_ENV_HTTP_PORT=$port" >/etc/runtara/environment
    check "systemctl starts the service" systemctl restart runtara-environment
else
    # no systemd here: what the unit does, by hand (StateDirectory=, User=, Environment=)
    install -d -o runtara -g runtara -m 0750 /var/lib/runtara
    mkdir -p /etc/runtara
    echo "RUNTARA_ENV_HTTP_PORT=$port" >/etc/runtara/environment
    (cd /var/lib/runtara && exec setpriv --reuid runtara --regid runtara --init-groups \
        env DATA_DIR=/var/lib/runtara RUNTARA_RUNNER=native /usr/bin/runtara-environment) \
        >/tmp/deb-daemon.log 2>&1 &
    daemon=$!
fi
for _ in $(seq 1 100); do
    curl -sf "$url/api/v1/health" >/dev/null && break
    sleep 0.1
done
check "the service answers health, on the port of /etc/runtara/environment" \
    env RUNTARA_URL=$url runtara-ctl health
check "the service serves the console" bash -c "curl -sf $url/ui | grep -q '/ui/app.js'"
prog=$(mktemp)
printf '#!/bin/sh\nexit 0\n' >"$prog"
chmod 0755 "$prog"
export RUNTARA_URL=$url
check "an image registers" runtara-ctl images register "$prog" --tenant pkg --name ok --runner native
check "an instance runs to completion through the installed shim" \
    runtara-ctl instances start --image ok --tenant pkg --id first --wait 60
rm -f "$prog"

if $systemd; then
    check "systemctl stops the service" systemctl stop runtara-environment
else
    kill -TERM "$daemon"
    wait "$daemon" && ok "the daemon stops cleanly on SIGTERM" || fail "the daemon stops cleanly on SIGTERM"
fi
check "no process of the service is left" bash -c '! pgrep -u runtara'

check "apt purges the package" apt-get remove --purge -y -qq runtara-environment
check "its files are gone" bash -c '! test -e /usr/bin/runtara-environment -o -e /usr/bin/runtara-shim -o -e '"$unit"
check "its data and settings are gone" bash -c '! test -e /var/lib/runtara -o -e /etc/runtara'
check "its user is gone" bash -c '! getent passwd runtara'
check "no process is left" bash -c '! pgrep -f "^/usr/bin/runtara-(environment|shim)"'
finish
