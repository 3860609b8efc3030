#!/bin/bash
# A throwaway PostgreSQL cluster for the tests, on a unix socket only:
#
#   scripts/pg-cluster.sh start DIR   initdb in DIR, start the server, create the database
#                                     "runtara"; prints its URL (TEST_DATABASE_URL). A cluster
#                                     already in DIR (stopped) is started again as it is.
#   scripts/pg-cluster.sh stop DIR    stop it (DIR stays; remove it yourself)
#
# Debian's postgresql package provides the server (/usr/lib/postgresql/<version>/bin). As root,
# the cluster runs as the user "postgres" (initdb refuses root) and DIR is handed to it.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1 dir=$2
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [[ -z "$bindir" ]]; then
    echo "pg-cluster: no PostgreSQL server installed; hint: apt-get install postgresql" >&2
    exit 1
fi
as_owner=()
if [[ $(id -u) -eq 0 ]]; then
    as_owner=(runuser -u postgres --)
fi

case $cmd in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    fresh=false
    if [[ ! -d "$dir/data" ]]; then
        fresh=true
        [[ ${#as_owner[@]} -eq 0 ]] || chown postgres: "$dir"
        "${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U runtara -A trust -E UTF8 \
            --no-instructions >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # only the socket in DIR: no TCP port to collide with another cluster
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses='' -k $dir -c max_connections=200" start >/dev/null ||
        { cat "$dir/server.log" >&2; exit 1; }
    [[ $fresh == false ]] || "$bindir/createdb" -h "$dir" -U runtara runtara
    echo "postgresql:///runtara?host=$dir&user=runtara"
    ;;
stop)
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
*)
    usage
    ;;
esac
