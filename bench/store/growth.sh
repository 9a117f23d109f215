#!/usr/bin/env bash
# Store file size under a steady workload, with log retention on.
#
# Runs jobxd (release build) with a short retention, starts a task every
# INTERVAL seconds whose step prints LINES lines, and samples the size of
# jobx.redb every SAMPLE seconds. With retention working the size levels
# off once tasks start expiring (after RETENTION seconds); with
# RETENTION=0 (keep forever) it grows for the whole run, for comparison.
# It also times a write request (POST /node) during the run (pruning must
# not hold up the API), and a backup of the store at the end.
#
# usage: bench/store/growth.sh            (env: DURATION RETENTION INTERVAL LINES SAMPLE PORT)
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-240}     # seconds of workload
RETENTION=${RETENTION:-30}    # seconds step logs are kept (0: forever)
INTERVAL=${INTERVAL:-0.25}    # seconds between task starts
LINES=${LINES:-2000}          # output lines per task (~100 bytes each)
SAMPLE=${SAMPLE:-15}          # seconds between size samples
PORT=${PORT:-18977}

cargo build --release -q -p jobxd -p jobx-plugin-local
bin=target/release
work=$(mktemp -d /tmp/jobx-growth.XXXXXX)
token=bench-admin-token-0001
days=$(awk -v s="$RETENTION" 'BEGIN { printf "%.8f", s / 86400 }')
cat > "$work/jobxd.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
name = "bench"
[storage]
data_dir = "$work/data"
[logs]
retention_days = $days
retention_check_secs = 2
[plugins]
dir = ["$PWD/$bin"]
[[auth.tokens]]
name = "bench"
token = "$token"
roles = { "*" = "admin" }
TOML

"$bin/jobxd" --config "$work/jobxd.toml" 2>"$work/jobxd.log" &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

api() { curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
base=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -fs "$base/mon" >/dev/null 2>&1 && break; sleep 0.1; done
api -X POST "$base/node/10" -d '{"nodes":[{"name":"a"}]}' >/dev/null
api -X POST "$base/group/10" -d '{"name":"g","group_type":"list","node":"a"}' >/dev/null
script="i=0; while [ \$i -lt $LINES ]; do echo line \$i of a steady workload, padded to about one hundred bytes ..............; i=\$((i+1)); done"
api -X POST "$base/job/10" -d "{\"name\":\"j\",\"steps\":[{\"plugin\":\"local\",\"script\":\"$script\"}]}" >/dev/null

size() { stat -c %s "$work/data/jobx.redb"; }
echo "retention ${RETENTION}s, a task every ${INTERVAL}s, $LINES lines each, ${DURATION}s"
printf '%8s %8s %12s\n' elapsed tasks store_MiB
start=$(date +%s)
next_sample=0
tasks=0
lat="$work/latency"
: >"$lat"
while :; do
    now=$(( $(date +%s) - start ))
    [ "$now" -ge "$DURATION" ] && break
    api -X POST "$base/task/10/job/byname" -d '{"jobname":"j","group":"g"}' >/dev/null
    tasks=$((tasks + 1))
    # A write request, timed.
    api -o /dev/null -w '%{time_total}\n' -X POST "$base/node/10" \
        -d "{\"nodes\":[{\"name\":\"n$((tasks % 50))\"}]}" >>"$lat"
    if [ "$now" -ge "$next_sample" ]; then
        printf '%8s %8s %12.1f\n' "$now" "$tasks" "$(echo "$(size) / 1048576" | bc -l)"
        next_sample=$((next_sample + SAMPLE))
    fi
    sleep "$INTERVAL"
done
printf '%8s %8s %12.1f\n' "$DURATION" "$tasks" "$(echo "$(size) / 1048576" | bc -l)"
sort -n "$lat" | awk '{ a[NR] = $1 } END {
    printf "POST /node latency over %d requests: median %.1f ms, p99 %.1f ms, max %.1f ms\n",
        NR, a[int(NR * 0.5)] * 1000, a[int(NR * 0.99)] * 1000, a[NR] * 1000 }'
grep -c "log retention: removed" "$work/jobxd.log" | sed 's/^/retention passes that removed logs: /' || true
# A backup of the store as it is now, timed.
t0=$(date +%s.%N)
JOBX_TOKEN=$token "$bin/jobxd" backup --config "$work/jobxd.toml" --to "$work/backup.redb" >/dev/null
t1=$(date +%s.%N)
printf 'backup: %.1f MiB store file -> %.1f MiB backup in %.1f s\n' \
    "$(echo "$(size) / 1048576" | bc -l)" \
    "$(echo "$(stat -c %s "$work/backup.redb") / 1048576" | bc -l)" \
    "$(echo "$t1 - $t0" | bc -l)"
