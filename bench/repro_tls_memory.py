"""Bare cheroot TLS server + bounded loopback client: RSS per request.

Outside pgwarden (only cheroot and the standard library in the server), to
bisect the RSS growth under TLS (cherrypy/cheroot#647, docs/reliability.md)::

    .venv/bin/python bench/repro_tls_memory.py --variant builtin --requests 100000
    .venv/bin/python bench/repro_tls_memory.py --variant plain --close

The server runs in its own process (``serve``), so its RSS is its own; the
client threads (``--clients`` keep-alive connections, or one connection per
request with ``--close``) send GET / until ``--requests`` (bounded, loopback).
Prints the server's RSS after the warm-up and at the end, and the bytes per
request. ``--variant``: ``plain`` (no TLS), ``builtin`` (cheroot's
BuiltinSSLAdapter), ``fixed`` (agent_core.web.tls.PgwardenSSLAdapter),
``minimal`` (an adapter whose environ has two keys) or ``session-only`` (the
same plus one read of ``sock.session``: the leak).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

BODY = b'{"ok": true}'


def app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def serve(variant: str, cert: str, key: str, threads: int, trim: float, ka_limit: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=threads, timeout=30)
    # cheroot keeps at most 10 idle keep-alive connections (HTTPServer.keep_alive_conn_limit):
    # past that it answers "Connection: close", and the client's next request needs a new handshake
    server.keep_alive_conn_limit = ka_limit
    if variant == "builtin":
        server.ssl_adapter = BuiltinSSLAdapter(cert, key)
    elif variant == "fixed":
        from agent_core.web.tls import PgwardenSSLAdapter

        server.ssl_adapter = PgwardenSSLAdapter(cert, key)
    elif variant in ("minimal", "session-only"):
        # the bisection: an environ of two keys, plus (session-only) one read of sock.session
        class Trivial(BuiltinSSLAdapter):
            def get_environ(self, sock):  # type: ignore[no-untyped-def]
                if variant == "session-only":
                    sock.session  # noqa: B018
                return {"wsgi.url_scheme": "https", "HTTPS": "on"}

        server.ssl_adapter = Trivial(cert, key)
    elif variant != "plain":
        raise SystemExit(f"unknown variant {variant}")
    server.prepare()
    if trim:
        libc = ctypes.CDLL("libc.so.6")

        def trimmer() -> None:
            while True:
                time.sleep(trim)
                libc.malloc_trim(0)

        threading.Thread(target=trimmer, daemon=True).start()
    print(server.bind_addr[1], flush=True)
    server.serve()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def client(port: int, tls: bool, close: bool, quota: list[int], lock: threading.Lock) -> None:
    """Sends requests until the shared quota is spent; a keep-alive connection
    the server closes is reopened and counted in ``quota[1]``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    sock = None
    while True:
        with lock:
            if quota[0] <= 0:
                break
            quota[0] -= 1
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port))
            if tls:
                sock = ctx.wrap_socket(sock)
        sock.sendall(request)
        data = b""
        while not data.endswith(BODY):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data.endswith(BODY):  # closed by the server between two requests: reopen, count, resend
            with lock:
                quota[0] += 1
                quota[1] += 1
            sock.close()
            sock = None
            continue
        if close:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def drive(port: int, tls: bool, close: bool, n: int, clients: int) -> tuple[float, int]:
    """``n`` requests from ``clients`` threads: (requests/s, connections the server closed)."""
    quota, lock = [n, 0], threading.Lock()
    workers = [threading.Thread(target=client, args=(port, tls, close, quota, lock)) for _ in range(clients)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return n / (time.monotonic() - t0), quota[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="builtin")
    p.add_argument("--requests", type=int, default=50000)
    p.add_argument("--warmup", type=int, default=5000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--threads", type=int, default=10, help="cheroot worker threads")
    p.add_argument("--close", action="store_true", help="one connection per request")
    p.add_argument("--steps", type=int, default=5, help="RSS printed this many times")
    p.add_argument("--trim", type=float, default=0, help="malloc_trim(0) every this many seconds")
    p.add_argument("--key-type", default="rsa:2048", help="or ec (P-256)")
    p.add_argument("--ka-limit", type=int, default=10, help="cheroot's keep_alive_conn_limit (its default: 10)")
    p.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.variant, *args.serve, args.threads, args.trim, args.ka_limit)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        new_key = (
            ["-newkey", "rsa:2048"]
            if args.key_type != "ec"
            else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        )
        subprocess.run(
            ["openssl", "req", "-x509", *new_key, "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )  # fmt: skip
        cmd = [sys.executable, __file__, "--variant", args.variant, "--threads", str(args.threads)]
        server = subprocess.Popen(
            [*cmd, "--trim", str(args.trim), "--ka-limit", str(args.ka_limit), "--serve", cert, key],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            tls = args.variant != "plain"
            drive(port, tls, args.close, args.warmup, args.clients)
            start = rss_kib(server.pid)
            mode = "one per connection" if args.close else f"{args.clients} keep-alive"
            print(
                f"{args.variant}, {mode}: RSS after {args.warmup} warm-up requests {start / 1024:.1f} MiB", flush=True
            )
            done, rate, dropped = 0, 0.0, 0
            for _ in range(args.steps):
                n = args.requests // args.steps
                rate, closed = drive(port, tls, args.close, n, args.clients)
                done, dropped = done + n, dropped + closed
                rss = rss_kib(server.pid)
                print(f"  {done:>9} requests: {rss / 1024:7.1f} MiB, {rate:6.0f} req/s", flush=True)
            growth = (rss - start) * 1024
            print(f"  growth {growth / 2**20:+.1f} MiB, {growth / done:+.0f} bytes/request", flush=True)
            if dropped and not args.close:
                print(f"  keep-alive connections closed by the server and reopened: {dropped}", flush=True)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
