#!/usr/bin/env bash
# Resource limits under hostile load: builds the release jobxd and runs
# hardening.py against it (one fresh daemon per finding, loopback only).
#
# usage: bench/hardening/run.sh [BIN_DIR] [--only 1,1b,2,...]
#   BIN_DIR: a directory holding jobxd and libjobx_plugin_local.so; default
#   target/release, built first.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -ge 1 ] && [ "${1#--}" = "$1" ]; then
    bin=$1
    shift
else
    cargo build --release -q -p jobxd -p jobx-plugin-local
    bin=target/release
fi
exec python3 bench/hardening/hardening.py "$bin" "$@"
