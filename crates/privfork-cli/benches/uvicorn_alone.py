#!/usr/bin/env python3
"""uvicorn's own drops on a graceful stop, with no privfork involved.

Holds a listening socket itself and hands it from one plain uvicorn to
the next, as `privfork serve` does on SIGHUP (start the new one, wait 2 s,
SIGTERM the old one, wait for it), under load from clients that never
retry (HTTP/1.0, a new connection per request). Prints the failed requests
and their kinds.

uvicorn 0.17 (Debian 12) closes a connection it has accepted but not yet
read when its stop begins, so a few fail here: what
`tests/serve.rs::uvicorn_reloads_keep_every_connection_but_the_ones_uvicorn_drops`
allows, and docs/serve.md says.

    python3 crates/privfork-cli/benches/uvicorn_alone.py [HANDOVERS=10] [PAUSE_MS=5]

PAUSE_MS: each client's pause between requests (5, as the tests' load;
0 for clients that never pause).
"""
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def main():
    handovers = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if not 1 <= handovers <= 200:
        sys.exit(f"HANDOVERS must be 1..200, not {handovers}")
    pause_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if not 0 <= pause_ms <= 1000:
        sys.exit(f"PAUSE_MS must be 0..1000, not {pause_ms}")
    app_dir = tempfile.mkdtemp(prefix="uvicorn-alone.")
    with open(os.path.join(app_dir, "asgi.py"), "w") as f:
        f.write(APP)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    fd = str(listener.fileno())
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

    def start():
        return subprocess.Popen(
            ["/usr/bin/uvicorn", "--fd", fd, "--app-dir", app_dir, "asgi:app",
             "--log-level", "warning"],
            pass_fds=[listener.fileno()], env=env)

    stop = threading.Event()
    lock = threading.Lock()
    ok = [0]
    failed = collections.Counter()

    def client():
        while not stop.is_set():
            kind = None
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                    data = b""
                    while len(data) < 65536:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                if not data:
                    kind = "empty reply"
                elif not data.startswith(b"HTTP/1.1 200"):
                    kind = "not 200"
            except OSError as e:
                kind = type(e).__name__
            with lock:
                if kind is None:
                    ok[0] += 1
                else:
                    failed[kind] += 1
            time.sleep(pause_ms / 1000)

    current = start()
    time.sleep(2)
    clients = [threading.Thread(target=client) for _ in range(3)]
    for t in clients:
        t.start()
    try:
        for _ in range(handovers):
            new = start()
            time.sleep(2)
            current.send_signal(signal.SIGTERM)
            current.wait(timeout=60)
            current = new
    finally:
        stop.set()
        for t in clients:
            t.join()
        current.send_signal(signal.SIGTERM)
        current.wait(timeout=60)
    total = sum(failed.values())
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(failed.items())) or "none"
    print(f"plain uvicorn, {handovers} handovers of a held socket under load "
          f"(3 clients, {pause_ms} ms pause): "
          f"{total} failed of {ok[0] + total} requests ({kinds})")


if __name__ == "__main__":
    main()
