#!/usr/bin/env bash
# A many-host test network on one machine, for the tests that run Folio's processes as
# separate hosts (bins/worker/tests/hosts.rs). Each host is a Linux network namespace with
# one address; a bridge in a namespace of its own joins them. Nothing is added to the
# machine's own network: traffic goes only between the hosts' addresses.
#
#   scripts/hosts.sh up NAME       create the hosts, start Postgres and the S3 server on `db`;
#                                  prints KEY=VALUE lines (addresses, URLs, the state folder)
#   scripts/hosts.sh down NAME     kill every process on the hosts, remove all it made
#   scripts/hosts.sh cut NAME HOST     pull HOST's cable (its link on the bridge goes down)
#   scripts/hosts.sh heal NAME HOST    plug it back in
#   scripts/hosts.sh exec NAME HOST CMD...   run CMD on HOST
#   scripts/hosts.sh sweep         remove the hosts of runs whose owner process is gone
#
# Hosts: db (Postgres on :5432, S3 on :9000), api1, api2, w1, w2, w3, client (the test's own).
# `up` records the calling process (FOLIO_HOSTS_OWNER, default the parent) as the owner;
# `sweep` (run by every `up`) removes what a killed run left behind.
#
# Env: FOLIO_MOTO_SERVER (the S3 server, from scripts/install-moto.sh; required),
# FOLIO_PG_BIN (Postgres binaries; default the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

SUBNET=10.210.0
HOSTS="db api1 api2 w1 w2 w3 client"
STATE_ROOT=/tmp/folio-hosts

die() { echo "hosts.sh: $*" >&2; exit 1; }

addr_of() {
    case $1 in
        db) echo "$SUBNET.2" ;;
        api1) echo "$SUBNET.11" ;;
        api2) echo "$SUBNET.12" ;;
        w1) echo "$SUBNET.21" ;;
        w2) echo "$SUBNET.22" ;;
        w3) echo "$SUBNET.23" ;;
        client) echo "$SUBNET.100" ;;
        *) die "no host $1 (hosts: $HOSTS)" ;;
    esac
}

ns() { echo "folio-$1-$2"; }
switch() { echo "folio-$1-sw"; }

check_name() {
    [[ $1 =~ ^[a-z0-9]{1,12}$ ]] || die "a run's name is 1-12 lowercase letters or digits: '$1'"
}

pg_bin() {
    if [ -n "${FOLIO_PG_BIN:-}" ]; then
        echo "$FOLIO_PG_BIN"
        return
    fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$newest" ] || die "no Postgres server binaries under /usr/lib/postgresql (apt-get install postgresql)"
    echo "$newest"
}

# Kills every process on the run's hosts (the client host is the test's own thread: left).
kill_processes() {
    local name=$1 host pids
    for host in $HOSTS; do
        [ "$host" = client ] && continue
        ip netns list | grep -qw "$(ns "$name" "$host")" || continue
        pids=$(ip netns pids "$(ns "$name" "$host")" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    done
}

down() {
    local name=$1 host
    kill_processes "$name"
    for host in $HOSTS; do
        ip netns del "$(ns "$name" "$host")" 2>/dev/null || true
    done
    ip netns del "$(switch "$name")" 2>/dev/null || true
    rm -rf "${STATE_ROOT:?}/$name"
}

sweep() {
    local folder name owner
    for folder in "$STATE_ROOT"/*/; do
        [ -d "$folder" ] || continue
        name=$(basename "$folder")
        owner=$(cat "$folder/owner" 2>/dev/null || echo 0)
        if [ "$owner" = 0 ] || ! kill -0 "$owner" 2>/dev/null; then
            echo "hosts.sh: removing the hosts of run '$name' (owner $owner is gone)" >&2
            down "$name"
        fi
    done
    # Namespaces without a state folder (a run killed during `up`).
    for name in $(ip netns list | sed -n 's/^folio-\([a-z0-9]*\)-sw\b.*/\1/p'); do
        [ -d "$STATE_ROOT/$name" ] || down "$name"
    done
}

wait_for() {
    local what=$1 deadline=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
    echo "hosts.sh: $what is up" >&2
}

up() {
    local name=$1 host address state sw
    command -v ip >/dev/null || die "ip (iproute2) is missing: apt-get install iproute2"
    [ -n "${FOLIO_MOTO_SERVER:-}" ] && [ -x "$FOLIO_MOTO_SERVER" ] \
        || die "FOLIO_MOTO_SERVER must name the S3 server (scripts/install-moto.sh prints it)"
    sweep
    ip netns list | grep -qw "$(switch "$name")" && die "run '$name' exists; 'down $name' first"
    state="$STATE_ROOT/$name"
    mkdir -p "$state"
    echo "${FOLIO_HOSTS_OWNER:-$PPID}" >"$state/owner"
    trap 'down "$name"' ERR

    sw=$(switch "$name")
    ip netns add "$sw"
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    for host in $HOSTS; do
        address=$(addr_of "$host")
        ip netns add "$(ns "$name" "$host")"
        ip -n "$(ns "$name" "$host")" link set lo up
        ip link add eth0 netns "$(ns "$name" "$host")" type veth peer name "v-$host" netns "$sw"
        ip -n "$sw" link set "v-$host" master br0 up
        ip -n "$(ns "$name" "$host")" addr add "$address/24" dev eth0
        ip -n "$(ns "$name" "$host")" link set eth0 up
    done

    # Postgres on db: a cluster of the run's own, owned by the postgres user.
    local bin db
    bin=$(pg_bin)
    db=$(ns "$name" db)
    mkdir -p "$state/pg"
    chown postgres "$state/pg"
    chmod 700 "$state/pg"
    runuser -u postgres -- "$bin/initdb" -D "$state/pg/data" -U postgres -A trust -E UTF8 --no-sync >"$state/initdb.log" 2>&1 \
        || die "initdb failed: $(cat "$state/initdb.log")"
    cat >>"$state/pg/data/postgresql.conf" <<EOF
# written by scripts/hosts.sh
listen_addresses = '$(addr_of db)'
port = 5432
unix_socket_directories = '$state/pg'
max_connections = 300
fsync = off
full_page_writes = off
synchronous_commit = off
track_io_timing = on
EOF
    echo "host all all $SUBNET.0/24 trust" >>"$state/pg/data/pg_hba.conf"
    ip netns exec "$db" runuser -u postgres -- "$bin/pg_ctl" -D "$state/pg/data" -l "$state/pg/server.log" -w -t 60 start >/dev/null \
        || die "Postgres did not start: $(cat "$state/pg/server.log")"

    # The S3 server on db.
    ip netns exec "$db" "$FOLIO_MOTO_SERVER" -H "$(addr_of db)" -p 9000 </dev/null >"$state/s3.log" 2>&1 &
    wait_for "the S3 server" 60 ip netns exec "$(ns "$name" client)" \
        bash -c "exec 3<>/dev/tcp/$(addr_of db)/9000" \
        || die "the S3 server did not answer: $(cat "$state/s3.log")"
    wait_for "Postgres" 60 ip netns exec "$(ns "$name" client)" \
        "$bin/pg_isready" -q -h "$(addr_of db)" -p 5432 \
        || die "Postgres is not reachable from the client host"
    trap - ERR

    echo "STATE=$state"
    echo "DATABASE_URL=postgres://postgres@$(addr_of db):5432/postgres"
    echo "S3_ENDPOINT=http://$(addr_of db):9000"
    for host in $HOSTS; do
        echo "ADDR_$host=$(addr_of "$host")"
        echo "NS_$host=$(ns "$name" "$host")"
    done
}

link() {
    local name=$1 host=$2 state=$3
    addr_of "$host" >/dev/null
    ip -n "$(switch "$name")" link set "v-$host" "$state"
}

command=${1:-}
case $command in
    up) check_name "${2:-}"; up "$2" ;;
    down) check_name "${2:-}"; down "$2" ;;
    cut) check_name "${2:-}"; link "$2" "${3:?host}" down ;;
    heal) check_name "${2:-}"; link "$2" "${3:?host}" up ;;
    exec)
        check_name "${2:-}"; name=$2; host=${3:?host}; shift 3
        addr_of "$host" >/dev/null
        exec ip netns exec "$(ns "$name" "$host")" "$@" ;;
    sweep) sweep ;;
    *) die "usage: hosts.sh up|down|cut|heal|exec NAME ... | sweep" ;;
esac
