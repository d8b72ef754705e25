"""The buffered input and output a worker is given for one request.

The front reads a whole request before a worker is involved; the worker's
reads are served from that buffer (:class:`BufferedInput`), so a worker never
waits for a client to send. Its writes have a deadline too (:class:`Output`).
"""

from __future__ import annotations

import socket
import time

#: Largest read from a socket at once.
READ_SIZE = 65536


class BufferedInput:
    """The ``rfile`` a worker reads a request from: the bytes the front read,
    then (only for a request handed over before its end, which is answered
    with an error and closed) the socket, each read with ``timeout``."""

    def __init__(self, data: bytes, sock: socket.socket, timeout: float):
        self._buf = data
        self._pos = 0
        self._sock = sock
        self._timeout = timeout
        self.bytes_read = 0

    def has_data(self) -> bool:
        return self._pos < len(self._buf)

    def leftover(self) -> bytes:
        """What was read from the socket but not by the request (pipelined)."""
        return self._buf[self._pos :]

    def _fill(self) -> bool:
        self._sock.settimeout(self._timeout)
        chunk = self._sock.recv(READ_SIZE)
        if not chunk:
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        return True

    def _take(self, end: int) -> bytes:
        data = self._buf[self._pos : end]
        self._pos = end
        self.bytes_read += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) - self._pos < size and self._fill():
            pass
        return self._take(min(len(self._buf), self._pos + size))

    def readline(self, size: int | None = -1) -> bytes:
        while True:
            nl = self._buf.find(b"\n", self._pos)
            if nl >= 0 and (size is None or size < 0 or nl - self._pos < size):
                return self._take(nl + 1)
            if size is not None and size >= 0 and len(self._buf) - self._pos >= size:
                return self._take(self._pos + size)
            if not self._fill():
                return self._take(len(self._buf))

    def __iter__(self) -> BufferedInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """The socket belongs to the connection: nothing to close here."""


class Output:
    """The ``wfile`` a worker writes a response to.

    Writes are gathered and sent by :meth:`flush` (at the end of each
    request, see :class:`agent_core.web.server._Connection`, or once 64 KiB are
    waiting): cheroot writes the status and headers, then each piece of the
    body, and one send instead of two or more halves the system calls and,
    under TLS, the records and their encryption for a small JSON answer.

    Each send must be taken by the client within ``send_timeout`` plus one
    second per 64 KiB: a client that stops reading cannot hold a worker
    longer."""

    MIN_RATE = 64 * 1024
    FLUSH_AT = 64 * 1024

    def __init__(self, sock: socket.socket, send_timeout: float):
        self._sock = sock
        self._send_timeout = send_timeout
        self._pending: list[bytes] = []
        self._size = 0
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= self.FLUSH_AT:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._size = [], 0
        view = memoryview(data)
        deadline = time.monotonic() + self._send_timeout + len(view) / self.MIN_RATE
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the client did not read the response in time")
            self._sock.settimeout(remaining)
            sent = self._sock.send(view)
            view = view[sent:]
        self.bytes_written += len(data)

    def discard(self) -> None:
        """Forget what was not sent (the connection is closing)."""
        self._pending, self._size = [], 0

    def close(self) -> None:
        """The socket belongs to the connection: nothing to close here."""
