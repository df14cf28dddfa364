#!/bin/sh
# Container entry point: configuration comes from FLOWLAKE_* variables (catalog, warehouse, principal),
# which `flowlake` reads itself; everything else is passed through to the CLI.
set -eu
: "${FLOWLAKE_CATALOG:?set FLOWLAKE_CATALOG, e.g. postgresql://flowlake@postgres/flowlake}"
: "${FLOWLAKE_WAREHOUSE:?set FLOWLAKE_WAREHOUSE, e.g. s3://lake/warehouse}"
exec flowlake "$@"
