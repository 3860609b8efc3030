#!/usr/bin/env bash
# Prepare the host for the OCI runner; idempotent, safe to run at every start.
#
# On a host whose cgroups run in hybrid mode (v1 controllers plus a cgroup2 hierarchy at
# /sys/fs/cgroup/unified), crun 1.8 refuses every container while a controller is attached to
# that cgroup2 hierarchy ("cgroups in hybrid mode not supported, drop all controllers from
# cgroupv2"). Debian's default leaves hugetlb there. Binding hugetlb to a v1 hierarchy of its
# own empties the cgroup2 controller list; the kernel keeps it so until the next boot. Pure
# cgroup v2 hosts and pure v1 hosts need nothing.
#
#   scripts/setup-host.sh          fix what needs fixing (as root); otherwise say what to run
#   scripts/setup-host.sh --check  change nothing; exit 1 if the host still needs the fix
set -euo pipefail

check=0
[[ "${1:-}" == "--check" ]] && check=1

unified=/sys/fs/cgroup/unified/cgroup.controllers
controllers=""
[[ -r $unified ]] && controllers=$(<"$unified")
if [[ -z "${controllers// /}" ]]; then
    exit 0 # pure v2, pure v1, or hybrid with nothing left on the cgroup2 side
fi

fix=(mkdir -p /sys/fs/cgroup/hugetlb '&&' mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb)
if [[ $check -eq 1 || $(id -u) -ne 0 ]]; then
    echo "cgroups run in hybrid mode with controllers on cgroup2 ($controllers):" \
        "crun refuses to run containers" >&2
    echo "hint: run as root: scripts/setup-host.sh, or: ${fix[*]}" >&2
    # only a check fails: an unprivileged install-deps.sh run must not stop here
    exit $check
fi

if [[ " $controllers " == *" hugetlb "* ]]; then
    mkdir -p /sys/fs/cgroup/hugetlb
    if ! mountpoint -q /sys/fs/cgroup/hugetlb; then
        mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
    fi
fi
controllers=$(<"$unified")
if [[ -n "${controllers// /}" ]]; then
    echo "cgroup2 still holds controllers ($controllers): bind each to a v1 hierarchy" \
        "(mount -t cgroup -o NAME cgroup /sys/fs/cgroup/NAME), or boot with" \
        "systemd.unified_cgroup_hierarchy=1" >&2
    exit 1
fi
echo "setup-host: hugetlb bound to a cgroup v1 hierarchy; cgroup2 holds no controllers" >&2
