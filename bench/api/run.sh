#!/usr/bin/env bash
# The task API with 100,000 tasks and 32 clients against a release jobxd.
# Not part of CI. Extra arguments go to the bench binary (e.g. --rounds 5).
# See bench/api/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p jobxd -p jobx-plugin-local -p jobx-bench-api
export JOBX_BIN_DIR="${JOBX_BIN_DIR:-$PWD/target/release}"
exec target/release/jobx-bench-api "$@"
