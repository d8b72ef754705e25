"""What signed requests cost (docs/reliability.md, "Signed requests").

Prints, on this machine: the time to verify one RSA-PSS/SHA-256 signature of
a 4096-bit key (the temboard UI's) and of a 2048-bit one; the memory a full
replay cache of ``[signing] replay_cache_size`` entries takes; and the time
of one ``add`` into a full cache (each evicts). Pure in-process measures, no
network; bounded in count. Nothing is asserted.

    .venv/bin/python bench/signing.py            # 500 verifications, 50,000 cache entries
    .venv/bin/python bench/signing.py --smoke    # a few of each
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
import tracemalloc
import uuid

from agent_core.auth import signing
from agent_core.testing import TemboardSigner


def verify_figures(bits: int, count: int) -> tuple[float, float]:
    signer = TemboardSigner(bits=bits)
    key = signing.load_public_key(signer.public_pem)
    headers = {
        "host": "127.0.0.1:2345",
        "x-temboard-date": "20260101T120000Z",
        "x-temboard-request-id": str(uuid.uuid4()),
        "x-temboard-user": "alice",
    }
    text = signing.canonical_string("GET", "/activity", headers).encode()
    raw = base64.b64decode(signer.sign(text.decode())[3:])
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert signing.verify_signature(key, raw, text)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1 if len(times) > 1 else 0]


def cache_figures(size: int) -> tuple[float, float]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = signing.ReplayCache(size)
    now = time.time()
    for _ in range(size):
        cache.add(str(uuid.uuid4()), now, now + 301, now)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    started = time.perf_counter()
    extra = 1000
    for _ in range(extra):
        cache.add(str(uuid.uuid4()), now + 1, now + 302, now)
    per_add = (time.perf_counter() - started) / extra * 1e6
    return used / size, per_add


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    count, size = (5, 1000) if args.smoke else (500, 50000)
    for bits in (4096, 2048):
        median, p99 = verify_figures(bits, count)
        print(f"RSA-{bits} PSS verify: median {median:.3f} ms, p99 {p99:.3f} ms ({count} verifications)")
    per_entry, per_add = cache_figures(size)
    print(
        f"replay cache: {per_entry:.0f} bytes per entry ({size} uuid4 ids: {per_entry * size / 1e6:.1f} MB);"
        f" add into a full cache (evicting) {per_add:.1f} us"
    )


if __name__ == "__main__":
    main()
