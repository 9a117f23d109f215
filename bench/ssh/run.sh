#!/usr/bin/env bash
# Wall time of the same job over 20 sshd servers, in batches of 5, with jobx,
# a batch-by-batch ControlMaster loop and ansible-playbook, alternated over
# several rounds. Not part of CI. Extra arguments go to the bench
# binary (e.g. --rounds 9). See bench/ssh/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; then
    echo "needs /usr/sbin/sshd and ssh (Debian: apt-get install openssh-server openssh-client)" >&2
    exit 1
fi

# ansible-core from PyPI, in a virtualenv under target/ (kept between runs;
# delete target/bench-ssh to start over).
venv=target/bench-ssh/venv
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/ansible-playbook" ]; then
    rm -rf "$venv"
    # Without ansible the bench still compares jobx with the ControlMaster loop.
    if ! { "$python" -m venv "$venv" &&
           "$venv/bin/python" -m pip install --quiet --upgrade pip &&
           "$venv/bin/python" -m pip install --quiet ansible-core; }; then
        echo "ansible-core could not be installed: comparing with the ControlMaster loop only" >&2
    fi
fi

cargo build --release -p jobxd -p jobx-plugin-ssh -p jobx-bench-ssh

# The daemon binary and libjobx_plugin_ssh.so both come from here.
export JOBX_BIN_DIR="$PWD/target/release"

# Python on the hosts (this machine) for ansible's modules.
target_python=/usr/bin/python3
[ -x "$target_python" ] || target_python="$PWD/$venv/bin/python"

exec target/release/jobx-bench-ssh \
    --ansible-playbook "$PWD/$venv/bin/ansible-playbook" \
    --python "$target_python" \
    "$@"
