"""The agent key never reaches the log file, however a request spells it.

Each request is written by hand on a plain socket, so the exact bytes of the
request line go out; the agent runs as ``pgwarden serve`` at DEBUG with a log
file, which is then searched for the key (the access log and every other
logger write there).
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import quote, urlsplit

from agent_core.redaction import redact_target, secret_pattern
from agent_core.testing import KEY


def send(url: str, request_line: str, *headers: str) -> tuple[int, Any]:
    """The request ``request_line`` sent as is (Connection: close); (status, JSON body)."""
    parts = urlsplit(url)
    data = "\r\n".join([request_line, "Host: 127.0.0.1", *headers, "Connection: close", "", ""]).encode("latin-1")
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else None


def encoded(text: str, every: int = 1) -> str:
    """``text`` with every ``every``-th character percent-encoded (lower-case hex for odd ones)."""
    out = []
    for i, char in enumerate(text):
        if i % every == 0:
            code = quote(char, safe="") if not char.isalnum() else f"%{ord(char):02X}"
            out.append(code.lower() if i % 2 else code)
        else:
            out.append(char)
    return "".join(out)


SPELLINGS = [
    f"/discover?key={KEY}",
    f"/discover;key={KEY}",
    f"/discover?x=1;key={KEY}",
    f"/discover/;key={KEY}/x",
    f"/discover?KEY={KEY}",
    f"/discover?Key={KEY}",
    f"/discover?key[]={KEY}",
    f"/discover?key%5B%5D={KEY}",
    f"/discover?key=a&key={KEY}",
    f"/discover?%6Bey={KEY}",
    f"/discover?%4B%45%59={KEY}",
    f"/discover?key={encoded(KEY)}",
    f"/discover?key={encoded(KEY, 3)}",
    f"/discover?key={encoded(KEY, 2).replace('%', '%25', 3)}",  # partly encoded twice
    f"/discover?token={KEY}",
    f"/discover?{KEY}",
    f"/discover?x={KEY}&y=1",
    f"/{KEY}",
    f"/discover/{KEY}",
    f"/{encoded(KEY, 2)}",
    f"/x{KEY}y?z",
    "http://127.0.0.1/discover?key=" + KEY,
    f"http://127.0.0.1/{KEY}",
    f"http://user:{KEY}@127.0.0.1/discover",
]


def test_the_key_never_reaches_the_log_file(agent_process):
    running = agent_process()
    answers = []
    for target in SPELLINGS:
        for method in ("GET", "OPTIONS", "POST"):
            status, body = send(running.url, f"{method} {target} HTTP/1.1", "Content-Length: 0")
            answers.append((method, target, status))
            assert status < 500, (method, target, status, body)
            if status >= 400:
                assert set(body) == {"error"}, (target, body)
    # the plain spelling works, and the key is accepted only as ?key= or a header
    assert ("GET", f"/discover?key={KEY}", 200) in answers
    assert ("GET", f"/discover;key={KEY}", 404) in answers
    assert ("GET", f"/discover?KEY={KEY}", 406) in answers
    status, _ = send(running.url, "GET /discover HTTP/1.1", f"X-Pgwarden-Key: {KEY}")
    assert status == 200
    text = running.log_text()
    assert "pgwarden.access" in text and "/discover" in text  # the access log is there
    assert "REDACTED" in text
    found = [line for line in text.splitlines() if KEY in line]
    assert not found, f"{len(found)} log lines hold the key:\n" + "\n".join(found)
    lowered = text.lower()
    assert KEY.lower() not in lowered
    assert not any(encoded(KEY, n).lower() in lowered for n in (1, 2, 3)), "an encoded key in the log"


def test_redact_target_by_name_and_by_value():
    """Pure: key-like parameters by name (any value, a wrong key too), the
    configured key by value in any encoding."""
    import re

    pattern = re.compile(secret_pattern(KEY))
    for spelling in (KEY, encoded(KEY), encoded(KEY, 3), encoded(KEY, 2).replace("%", "%25", 3)):
        assert pattern.fullmatch(spelling), spelling
    assert not pattern.search(KEY[:-1] + "?")
    assert redact_target("/a;key=wrong/b?KEY=wrong2&x=1&key[]=3") == "/a;key=REDACTED/b?KEY=REDACTED&x=1&key[]=REDACTED"
    assert redact_target("/plain?x=1&y=2") == "/plain?x=1&y=2"
