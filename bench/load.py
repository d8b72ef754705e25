"""The load process: N keep-alive HTTP/1.1 clients hammering one agent.

Run by the harness as a separate process (so its CPU is not the agent's):
reads one JSON job on stdin, writes one JSON result on stdout::

    {"url": "https://127.0.0.1:2345", "paths": ["/profile"], "method": "GET",
     "headers": {"X-Session": "..."}, "body": null, "concurrency": 8,
     "requests": 2000, "seconds": 10, "warmup": 20, "close": false}

Each client is one asyncio task holding one connection (TLS when the URL is
https, certificate not verified) and sending requests one after the other,
the paths taken in turn. The run stops after ``requests`` requests or
``seconds`` seconds, whichever comes first; ``warmup`` requests per client
are sent before and not counted. With ``"close": true`` every request says
``Connection: close`` (one connection, and TLS handshake, per request, as the
temboard UI does). Every answer other than 2xx is an error (the
first few are kept with their text); a broken connection is an error too and
is reopened.

Result: latencies in ms (p50, p95, p99, max), requests/s, errors, the
slowest connection set-up (``connect_max_ms``: a listen backlog overflow
shows as a 1 s or 3 s stall there), the connections reopened after the
server closed them (``reconnects``, warm-up included) and the load
process's own CPU seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def percentile(sorted_ms: list[float], p: float) -> float | None:
    """The ``p`` percentile (nearest rank) of sorted values; None when empty."""
    if not sorted_ms:
        return None
    rank = max(1, -(-len(sorted_ms) * p // 100))  # ceil(n * p / 100), at least 1
    return sorted_ms[int(rank) - 1]


def summary(latencies_ms: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_ms)
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": values[-1] if values else None,
    }


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None):
        self.host, self.port, self.tls = host, port, tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connect_ms: list[float] = []

    async def open(self) -> None:
        t0 = time.perf_counter()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
        self.connect_ms.append((time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                body += await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body


def build_requests(job: dict[str, Any], host: str) -> list[bytes]:
    body = job.get("body")
    data = b"" if body is None else json.dumps(body).encode()
    out = []
    for path in job["paths"]:
        connection = "close" if job.get("close") else "keep-alive"  # close: one connection per request
        lines = [f"{job.get('method', 'GET')} {path} HTTP/1.1", f"Host: {host}", f"Connection: {connection}"]
        lines += [f"{k}: {v}" for k, v in job.get("headers", {}).items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    return out


async def run(job: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(job["url"])
    tls = None
    if url.scheme == "https":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    host, port = url.hostname or "127.0.0.1", url.port or 443
    raws = build_requests(job, f"{host}:{port}")
    concurrency, budget = job["concurrency"], job["requests"]
    latencies: list[float] = []
    errors: list[str] = []
    error_count = 0
    state = {"sent": 0, "deadline": 0.0}

    async def client(index: int, conn: Connection) -> None:
        nonlocal error_count
        turn = index
        for _ in range(job.get("warmup", 0)):
            try:
                await conn.request(raws[turn % len(raws)])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
            turn += 1
        warmed.append(index)
        if len(warmed) == concurrency:
            all_warm.set()
        await go.wait()
        while state["sent"] < budget and time.perf_counter() < state["deadline"]:
            state["sent"] += 1
            raw = raws[turn % len(raws)]
            turn += 1
            t0 = time.perf_counter()
            try:
                status, body = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                conn.close()
                error_count += 1
                if len(errors) < 5:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            if not 200 <= status < 300:
                error_count += 1
                if len(errors) < 5:
                    errors.append(f"{status}: {body[:200].decode('utf-8', 'replace')}")

    conns = [Connection(host, port, tls) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))  # all at once: a small listen backlog would show here
    warmed: list[int] = []
    all_warm, go = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(client(i, c)) for i, c in enumerate(conns)]
    await all_warm.wait()  # the warm-up requests are not timed
    cpu0, t0 = os.times(), time.perf_counter()
    state["deadline"] = t0 + job["seconds"]
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    cpu1 = os.times()
    for c in conns:
        c.close()
    done = len(latencies)
    return {
        **summary(latencies),
        "requests": done,
        "errors": error_count,
        "error_samples": errors,
        "seconds": round(elapsed, 3),
        "rps": done / elapsed if elapsed > 0 else None,
        "connect_max_ms": max(ms for c in conns for ms in c.connect_ms),
        # connections opened again after the server closed them (Connection: close, or broken): each
        # one a new TCP and, over https, TLS handshake (cheroot closes keep-alive connections past its limit)
        "reconnects": sum(len(c.connect_ms) - 1 for c in conns),
        "load_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 3),
    }


def main() -> int:
    job = json.load(sys.stdin)
    json.dump(asyncio.run(run(job)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
