#!/usr/bin/env bash
# privfork serve against the same server bound directly, in one run:
#   1. requests per second (wrk, DUR seconds each) of gunicorn with 2 sync
#      workers bound by itself, run as nobody (setpriv), and of the same
#      gunicorn behind `privfork serve` (sandboxed, socket held by root);
#      the ratio;
#   2. failed requests during 20 restarts under load, from 4 clients that
#      never retry (a new connection per request): the naive way (SIGTERM,
#      wait for the exit, start again — nothing holds the socket meanwhile)
#      against 20 SIGHUPs to privfork serve (each waited for to finish).
# Run as root from the repository:
#   bash crates/privfork-cli/benches/serve.sh [DUR]
# PRIVFORK=path/to/privfork uses that binary; otherwise the release build
# (built here if missing). Needs gunicorn, wrk, python3, curl, setpriv.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10}
RESTARTS=20
[ "$(id -u)" = 0 ] || { echo "serve.sh: run as root" >&2; exit 1; }
for t in gunicorn wrk python3 curl setpriv; do
    command -v $t >/dev/null || { echo "serve.sh: $t missing" >&2; exit 1; }
done
PRIVFORK=${PRIVFORK:-target/release/privfork}
[ -x "$PRIVFORK" ] || cargo build --release -q -p privfork-cli

work=$(mktemp -d /tmp/privfork-serve-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    pkill -KILL -f "$work/app" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/app.py" <<'EOF'
import os
def app(environ, start_response):
    body = f"hello from {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
EOF
# The client: 4 threads, one request per connection, no retry, until
# $work/stop exists; prints "ok failed".
cat > "$work/load.py" <<'EOF'
import os, socket, sys, threading, time
port, stop = int(sys.argv[1]), sys.argv[2]
ok = failed = 0
lock = threading.Lock()
def client():
    global ok, failed
    while not os.path.exists(stop):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            s.close()
            good = data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
        except OSError:
            good = False
        with lock:
            if good: ok += 1
            else: failed += 1
        time.sleep(0.005)
ts = [threading.Thread(target=client) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print(ok, failed)
EOF
chmod 644 "$work"/*.py

port_direct=18481
port_serve=18482
gunicorn_args=(--chdir "$work" -w 2 --graceful-timeout 10 app:app)
direct() {
    setpriv --reuid nobody --regid nogroup --clear-groups \
        gunicorn --bind 127.0.0.1:$port_direct "${gunicorn_args[@]}" 2>>"$work/direct.log" &
    direct_pid=$!
    pids+=("$direct_pid")
}
wait_up() {
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.05
    done
    echo "serve.sh: nothing answers on port $1" >&2
    exit 1
}
rps() {
    wrk -t2 -c16 -d"${DUR}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'
}

direct
wait_up $port_direct
"$PRIVFORK" serve --listen 127.0.0.1:$port_serve -u nobody \
    -p 'stdio rpath proc accept tmppath fattr' \
    -v r:/usr/lib/python3 -v r:/usr/lib/python3.11 -v rx:/usr/bin/python3.11 \
    -v r:/usr/lib/x86_64-linux-gnu -v "r:$work" \
    -- /usr/bin/gunicorn "${gunicorn_args[@]}" 2>"$work/serve.log" &
serve_pid=$!
pids+=("$serve_pid")
wait_up $port_serve

# 1. Throughput, interleaved: direct, serve, direct, serve.
d1=$(rps $port_direct); s1=$(rps $port_serve)
d2=$(rps $port_direct); s2=$(rps $port_serve)
python3 - "$d1" "$d2" "$s1" "$s2" <<'EOF'
import sys
d1, d2, s1, s2 = map(float, sys.argv[1:])
d, s = (d1 + d2) / 2, (s1 + s2) / 2
print(f"requests/s  gunicorn bound directly: {d:.0f} ({d1:.0f}, {d2:.0f})")
print(f"requests/s  behind privfork serve:   {s:.0f} ({s1:.0f}, {s2:.0f})")
print(f"ratio serve/direct: {s / d:.3f}")
EOF

# 2. Restarts under load.
rm -f "$work/stop"
python3 "$work/load.py" $port_direct "$work/stop" > "$work/naive.out" &
load=$!
sleep 0.5
for _ in $(seq 1 $RESTARTS); do
    kill -TERM "$direct_pid"
    wait "$direct_pid" 2>/dev/null || true
    direct
    wait_up $port_direct
done
sleep 0.5
touch "$work/stop"
wait $load
read -r naive_ok naive_failed < "$work/naive.out"

rm -f "$work/stop"
python3 "$work/load.py" $port_serve "$work/stop" > "$work/serve.out" &
load=$!
sleep 0.5
for n in $(seq 1 $RESTARTS); do
    kill -HUP "$serve_pid"
    for _ in $(seq 1 1200); do
        grep -q "reload $n \(done\|failed\)" "$work/serve.log" && break
        sleep 0.05
    done
    grep -q "reload $n done" "$work/serve.log" || { echo "serve.sh: reload $n did not finish:" >&2; tail "$work/serve.log" >&2; exit 1; }
done
sleep 0.5
touch "$work/stop"
wait $load
read -r serve_ok serve_failed < "$work/serve.out"
echo "$RESTARTS naive restarts (stop, then start):  $naive_failed failed of $((naive_ok + naive_failed)) requests"
echo "$RESTARTS SIGHUPs to privfork serve:          $serve_failed failed of $((serve_ok + serve_failed)) requests"
kill -TERM "$serve_pid" "$direct_pid"
wait "$serve_pid" "$direct_pid" 2>/dev/null || true
