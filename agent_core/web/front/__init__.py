"""The network front: accepting, TLS handshakes and reading whole requests,
with deadlines and limits, before a worker thread is involved.

Why this replaces cheroot's ``ConnectionManager`` (cheroot 11.1):

- cheroot runs the TLS handshake in its one selector thread as a blocking
  call with the 30 s socket timeout: one peer that connects and sends
  nothing stops every other client for 30 s (a few of them, indefinitely).
- It hands a connection to a worker as soon as one byte is readable; the
  worker then reads the request line, headers and body with a per-``recv``
  timeout, so a peer sending a byte every few seconds holds a worker for as
  long as it likes, and ``threads`` such peers hold them all (slowloris).
- When descriptors run out, ``accept()`` fails with EMFILE on every loop and
  cheroot logs a traceback each time (158 MB of log in 35 s), spinning.
- It keeps at most 10 idle keep-alive connections and has no per-address
  limit.

:class:`FrontManager` is one thread with non-blocking sockets and a selector.
Its parts:

- :mod:`~agent_core.web.front.manager`: the loop, and **accept** with a
  global and a per-address limit (evicting the oldest idle connection at the
  global one) and a pause when descriptors run out;
- :mod:`~agent_core.web.front.connection`: each connection's phases, each
  with a deadline: **TLS handshake**, **request head**, **body**, hand-over
  to a worker, then **idle** keep-alive;
- :mod:`~agent_core.web.front.peer`: one connection's state (:class:`Peer`);
- :mod:`~agent_core.web.front.framing`: where a request ends (head, body of a
  known length or chunked) and the error answers the front sends itself;
- :mod:`~agent_core.web.front.buffers`: the worker's input, served from what
  the front read (:class:`BufferedInput`), and its output, with a deadline
  (:class:`Output`);
- :mod:`~agent_core.web.front.limits`: the bounds (:class:`Limits`), the
  connection counts and the rate-limited log (:class:`RateLog`).

Every wait of the front has a deadline and every count a bound; what it
closes is logged as counts once per interval, never a line per peer.
"""

from __future__ import annotations

from agent_core.web.front.buffers import READ_SIZE, BufferedInput, Output
from agent_core.web.front.connection import LINGER_TIME
from agent_core.web.front.framing import chunked_end
from agent_core.web.front.limits import LOG_INTERVAL, Limits, RateLog, log
from agent_core.web.front.manager import ACCEPT_BATCH, ACCEPT_PAUSE, SWEEP_INTERVAL, FrontManager
from agent_core.web.front.peer import BODY, BUSY, HANDSHAKE, HEAD, IDLE, LINGER, Peer

__all__ = [
    "ACCEPT_BATCH",
    "ACCEPT_PAUSE",
    "BODY",
    "BUSY",
    "HANDSHAKE",
    "HEAD",
    "IDLE",
    "LINGER",
    "LINGER_TIME",
    "LOG_INTERVAL",
    "READ_SIZE",
    "SWEEP_INTERVAL",
    "BufferedInput",
    "FrontManager",
    "Limits",
    "Output",
    "Peer",
    "RateLog",
    "chunked_end",
    "log",
]
