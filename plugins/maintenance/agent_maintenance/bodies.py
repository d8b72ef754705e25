"""The bodies of the read routes' answers: a document with its ``Age``
header (:func:`with_age`), kept chunks forgotten once sent (:class:`Sent`)
and streamed listings releasing their cursor and connection when they end
(:class:`Stream`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from agent_core.redaction import loggable
from agent_core.web.responses import Response

log = logging.getLogger("pgwarden.maintenance")


def with_age(document: dict[str, Any] | bytes | Iterable[bytes], age: float) -> Response:
    """``document`` (or its JSON text, or the chunks of it) answered 200 with
    ``Age``: whole seconds since its figures were read. Kept chunks (a tuple)
    are sent with their Content-Length; a stream (any other iterable) without:
    chunked to HTTP/1.1 clients, up to the connection's end to HTTP/1.0 ones."""
    headers = {}
    if isinstance(document, dict):
        document = json.dumps(document, default=str).encode()
    if isinstance(document, tuple):
        headers["Content-Length"] = str(sum(len(chunk) for chunk in document))
        document = Sent(document)
    headers["Age"] = str(max(int(age), 0))
    return Response(data=document, headers=headers)


class Sent:
    """Chunks to send, forgotten once sent: bottle keeps the last response body
    of each worker thread until its next request, which must not hold a
    result the figures' byte bound no longer counts."""

    def __init__(self, chunks: tuple[bytes, ...]):
        self._chunks: tuple[bytes, ...] = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        self._chunks = ()


def _malloc_trim() -> Callable[[], None]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def release() -> None:
        trim(0)

    return release


#: Give the heap's free memory back to the system (glibc's ``malloc_trim``;
#: nothing elsewhere). A listing's batches are freed when it ends, but glibc
#: keeps freed pages of its per-thread arenas: without this the agent's RSS
#: stayed 30 MB above idle after a 10,000-table listing.
trim_heap = _malloc_trim()


class Stream:
    """A streamed body: ``chunks``, then the resources of ``stack`` (the
    cursor's transaction, the pooled connection) released once, when the
    chunks end, fail or the WSGI server closes the body (client gone). A
    failure is logged and re-raised: cheroot then closes the connection
    without finishing the answer."""

    def __init__(self, chunks: Iterator[bytes], stack: contextlib.ExitStack, what: str):
        self._chunks = chunks
        self._stack: contextlib.ExitStack | None = stack
        self._what = what

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        except GeneratorExit:
            raise
        except BaseException as e:
            log.error("%s cut short, the answer is incomplete: %s", loggable(self._what), e)
            self._release(e)
            raise
        finally:
            self._release(None)

    def _release(self, error: BaseException | None) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._chunks = iter(())  # the last batch: not kept by bottle's per-thread response
        try:
            if error is None:
                stack.close()
            else:
                with contextlib.suppress(BaseException):  # the original error is the one raised
                    stack.__exit__(type(error), error, error.__traceback__)
        finally:
            trim_heap()

    def close(self) -> None:
        """Called by the WSGI server once the answer is sent (or the client
        went away): the release, if the chunks did not end, and a second trim
        of the heap, after what the server freed when the stream ended (its
        last chunks and buffers)."""
        self._release(None)
        trim_heap()
