#!/usr/bin/env bash
# The console's task page with 2,000 nodes in 10 batches, and the log view of
# a step with 1,000,000 lines, in headless Chromium against a release jobxd.
# Not part of CI. Extra arguments go to the bench binary (e.g. --runs 9).
# See bench/console/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "needs Debian's chromium and chromium-driver (tests/run.sh installs them)" >&2
    exit 1
fi

cargo build --release -p jobxd -p jobx-plugin-local -p jobx-bench-console
export JOBX_BIN_DIR="${JOBX_BIN_DIR:-$PWD/target/release}"
exec target/release/jobx-bench-console "$@"
