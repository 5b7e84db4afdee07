#!/usr/bin/env bash
# Two nodes on this machine, on a local PostgreSQL and Redis — what the compose file and
# the systemd units do, without containers. Ctrl-C stops both (they drain first).
#
#   deploy/run-local.sh [postgresql://postgres@127.0.0.1:5432/parley] [redis://127.0.0.1:6379/0]
#
# The database must exist (createdb parley). Node 1 listens on 8081, node 2 on 8082.
set -euo pipefail
DATABASE=${1:-postgresql://postgres@127.0.0.1:5432/parley}
BROKER=${2:-redis://127.0.0.1:6379/0}
DATA=${PARLEY_DATA:-./parley-nodes}
PARLEY=${PARLEY:-parley}

"$PARLEY" migrate --database "$DATABASE"
pids=()
for port in 8081 8082; do
    "$PARLEY" serve --port "$port" --data "$DATA/$port" --database "$DATABASE" --broker "$BROKER" \
        --node-id "local-$port" &
    pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
wait
