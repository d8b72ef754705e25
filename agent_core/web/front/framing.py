"""Just enough HTTP for the front to know where a request ends (its head,
its body of a known length or chunked), and the error answers it sends
itself. Everything else about the request is cheroot's to parse.
"""

from __future__ import annotations

from agent_core.web.errors import error_body


def _headers(head: bytes) -> dict[bytes, bytes]:
    """The header fields of a request head (names lower-cased; repeated ones joined)."""
    fields: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        value = value.strip()
        fields[key] = fields[key] + b", " + value if key in fields else value
    return fields


def chunked_end(buf: bytearray | bytes, pos: int, limit: int) -> tuple[int, int | None]:
    """Walk a chunked body from ``pos``: (position reached, end of the body
    or None while incomplete). The end is -1 when the framing is malformed or
    the chunks exceed ``limit`` bytes: the worker then answers the error."""
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return pos, (-1 if len(buf) - pos > 1024 else None)
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return pos, -1
        if size < 0:
            return pos, -1
        if size == 0:
            if buf[eol + 2 : eol + 4] == b"\r\n":
                return pos, eol + 4
            end = buf.find(b"\r\n\r\n", eol)
            if end < 0:
                return pos, (-1 if len(buf) - eol > 8192 else None)
            return pos, end + 4
        total += size
        if total > limit:
            return pos, -1
        nxt = eol + 2 + size + 2
        if len(buf) < nxt:
            return pos, None
        pos = nxt


def _json_response(status: str, message: str, close: bool = True) -> bytes:
    body = error_body(message).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode("latin-1") + body
