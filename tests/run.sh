#!/usr/bin/env bash
# Installs what the tests need (on Debian) and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v faketime >/dev/null || need+=(faketime)
command -v openssl >/dev/null || need+=(openssl)
# The jobx command line's prompt is tested in a real terminal.
command -v tmux >/dev/null || need+=(tmux)
# The console tests drive a headless Chromium through chromedriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# The package test builds the .deb with cargo-deb.
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The end-to-end tests drive the built binaries and plugins.
cargo build --workspace
cargo test --workspace --all-features --no-fail-fast
