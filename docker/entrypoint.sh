#!/bin/sh
# Container entry point. Configuration comes from FLOWLAKE_* variables, which `flowlake` reads itself
# (catalog, warehouse, principal, token, S3 endpoint). For `run`, the bytewax cluster settings map to
# flags:
#   FLOWLAKE_WORKERS_PER_PROCESS=N        -> -w N
#   FLOWLAKE_ADDRESSES="h1:p;h2:p"        -> -a "h1:p;h2:p" -i <process id>
#   FLOWLAKE_PROCESS_ID=K                 -> the process id; if unset, taken from a trailing "-<n>" in
#                                            the hostname (compose replicas: name-1, name-2 -> 0, 1)
set -eu
: "${FLOWLAKE_CATALOG:?set FLOWLAKE_CATALOG, e.g. postgresql://flowlake@postgres/flowlake}"
: "${FLOWLAKE_WAREHOUSE:?set FLOWLAKE_WAREHOUSE, e.g. s3://lake/warehouse}"

if [ "${1:-}" = "run" ]; then
    if [ -n "${FLOWLAKE_WORKERS_PER_PROCESS:-}" ]; then
        set -- "$@" -w "$FLOWLAKE_WORKERS_PER_PROCESS"
    fi
    if [ -n "${FLOWLAKE_ADDRESSES:-}" ]; then
        process_id="${FLOWLAKE_PROCESS_ID:-}"
        if [ -z "$process_id" ]; then
            suffix="${HOSTNAME:-$(hostname)}"
            suffix="${suffix##*-}"
            case "$suffix" in
                ''|*[!0-9]*) echo "flowlake-entrypoint: set FLOWLAKE_PROCESS_ID (hostname has no -<n> suffix)" >&2; exit 2 ;;
            esac
            process_id=$((suffix - 1))
        fi
        set -- "$@" -a "$FLOWLAKE_ADDRESSES" -i "$process_id"
    fi
fi
exec flowlake "$@"
