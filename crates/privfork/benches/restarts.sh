#!/usr/bin/env bash
# Main's state over many smooth restarts: runs the family test program's
# basic scenario (main + one worker on 127.0.0.1), sends SIGHUP N times
# (default 1000), each after the previous restart is done, and prints
# main's fds, threads, seccomp filters, children and RSS after the first
# restart and after the last, the time taken and the failed restarts.
# Run as root from the repository: bash crates/privfork/benches/restarts.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${1:-1000}
[ "$(id -u)" = 0 ] || { echo "restarts.sh: run as root (members drop to nobody)" >&2; exit 1; }
BIN=$(cargo test -p privfork --test family --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*family-[^"]*"' | head -1 | cut -d'"' -f4)
[ -x "$BIN" ] || { echo "restarts.sh: could not build the family test program" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$(mktemp)
PF_SCENARIO=basic PF_LISTEN=127.0.0.1:$PORT,name=http "$BIN" --privfork-case family_main >"$LOG" 2>&1 &
M=$!
trap 'kill $M 2>/dev/null; wait $M 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do grep -q "every role is ready" "$LOG" && break; sleep 0.05; done
snap() {
    echo "after $1: fds=$(ls /proc/$M/fd | wc -l) threads=$(awk '/^Threads/{print $2}' /proc/$M/status)" \
        "seccomp_filters=$(awk '/^Seccomp_filters/{print $2}' /proc/$M/status)" \
        "children=$(wc -w < /proc/$M/task/$M/children) rss_kb=$(awk '/^VmRSS/{print $2}' /proc/$M/status)"
}
start=$(date +%s.%N)
for n in $(seq 1 "$N"); do
    kill -HUP $M
    for _ in $(seq 1 1000); do grep -q "restart $n done\|restart $n failed" "$LOG" && break; sleep 0.01; done
    grep -q "restart $n done\|restart $n failed" "$LOG" || { echo "restart $n did not end within 10 s" >&2; exit 1; }
    [ "$n" = 1 ] && snap 1
done
snap "$N"
end=$(date +%s.%N)
echo "$N restarts in $(python3 -c "print(round($end - $start, 1))") s; failed: $(grep -c 'restart [0-9]* failed' "$LOG" || true)"
