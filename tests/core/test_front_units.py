"""Pure parts of the network front: chunked framing, the worker's buffered input."""

from __future__ import annotations

import socket

import pytest

from agent_core.web.front import BufferedInput, chunked_end


@pytest.mark.parametrize(
    ("body", "end"),
    [
        (b"5\r\nhello\r\n0\r\n\r\n", 15),
        (b"5;ext=1\r\nhello\r\n0\r\n\r\n", 21),
        (b"5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n", 27),
        (b"5\r\nhel", None),
        (b"5\r\nhello\r\n", None),
        (b"5\r\nhello\r\n0\r\n", None),
        (b"zz\r\nhello\r\n", -1),
        (b"-5\r\nhello\r\n", -1),
    ],
)
def test_chunked_end(body: bytes, end: int | None) -> None:
    assert chunked_end(body, 0, limit=1000)[1] == end


def test_chunked_end_resumes_where_it_stopped_and_bounds_the_total() -> None:
    pos, end = chunked_end(b"3\r\nabc\r\n4\r\nde", 0, limit=1000)
    assert end is None and pos == 8  # the complete first chunk is not walked again
    assert chunked_end(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", pos, limit=1000)[1] == 22
    assert chunked_end(b"400\r\n", 0, limit=1000)[1] == -1  # 1024 bytes announced, limit 1000


def test_buffered_input_serves_the_buffer_then_the_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        rfile = BufferedInput(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest", a, timeout=2)
        assert rfile.readline() == b"GET / HTTP/1.1\r\n"
        assert rfile.readline(4) == b"Host"
        assert rfile.readline() == b": x\r\n"
        assert rfile.read(2) == b"\r\n"
        assert rfile.has_data()
        b.sendall(b" and more\n")
        assert rfile.read(6) == b"rest a"
        assert rfile.readline() == b"nd more\n"
        assert not rfile.has_data() and rfile.leftover() == b""
        b.close()
        assert rfile.read() == b""


def test_buffered_input_read_times_out_on_a_silent_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        rfile = BufferedInput(b"ab", a, timeout=0.2)
        with pytest.raises(TimeoutError):
            rfile.read(3)
