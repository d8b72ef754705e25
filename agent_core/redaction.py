"""Secrets kept out of every log line: the agent key, however it was spelled.

Two layers:

* :func:`redact_target` replaces, in a request target about to be logged,
  the value of every query or path parameter whose name (percent-decoded,
  any case, brackets or not: ``key``, ``KEY``, ``%6Bey``, ``key[]``,
  ``;key=``) contains ``key``: a wrong key, another agent's key, a key sent
  under a name the API does not accept are redacted too.
* :func:`register` adds a secret (the configured agent key) that is replaced
  by ``REDACTED`` in *every* log record of the process, whoever logs it
  (the access log, tracebacks, cheroot, plugins), also when it arrives
  percent-encoded in any mixture (``%30`` for ``0``, ``%2530`` encoded twice,
  upper or lower case hex): a key sent as a path segment (``GET /K``) or in
  an absolute-form target is caught too. It works by a log record factory
  (:func:`logging.setLogRecordFactory`), installed on the first
  :func:`register`, so handlers added later (a test's, a syslog one) get the
  scrubbed record too.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "REDACTED"

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_installed = False


def _hex(byte: int) -> str:
    """A regex matching the two hex digits of ``byte`` in either case."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{byte:02X}")


def secret_pattern(secret: str) -> str:
    """A regex matching ``secret`` with each character as itself or
    percent-encoded (once or more: ``%xx``, ``%25xx``...), ``+`` for a space."""
    parts = []
    for char in secret:
        encoded = "".join(f"%(?:25)*{_hex(byte)}" for byte in char.encode("utf-8"))
        alternatives = [re.escape(char), encoded] + (["\\+"] if char == " " else [])
        parts.append("(?:" + "|".join(alternatives) + ")")
    return "".join(parts)


def register(secret: str | None) -> None:
    """Keep ``secret`` out of every log record from now on (no-op when empty)."""
    global _pattern, _installed
    if not secret:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        # longest first, so a secret containing another is replaced whole
        _pattern = re.compile("|".join(secret_pattern(s) for s in sorted(_secrets, key=len, reverse=True)))
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _scrub(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = True


def scrub(text: str) -> str:
    """``text`` with every registered secret (in any spelling) replaced."""
    pattern = _pattern
    return pattern.sub(REDACTED, text) if pattern is not None else text


def _scrub(record: logging.LogRecord) -> None:
    pattern = _pattern
    if pattern is None:
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format: left to logging's own error report
        return
    if pattern.search(message):
        record.msg, record.args = pattern.sub(REDACTED, message), None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if pattern.search(text):
            record.exc_text = pattern.sub(REDACTED, text)
    if record.stack_info and pattern.search(record.stack_info):
        record.stack_info = pattern.sub(REDACTED, record.stack_info)


def _is_key_name(raw_name: str) -> bool:
    try:
        name = unquote_plus(raw_name, errors="strict")
    except UnicodeError:
        name = unquote_plus(raw_name, encoding="latin-1")
    return "key" in name.lower()


def _redact_params(text: str, separator: str) -> str:
    """``name=value`` pairs joined by ``separator``, values of key-like names replaced."""
    pairs = text.split(separator)
    for i, pair in enumerate(pairs):
        name, eq, _value = pair.partition("=")
        if _is_key_name(name):
            pairs[i] = name + (eq or "=") + REDACTED
    return separator.join(pairs)


def redact_target(target: str) -> str:
    """A request target (path, ``;`` path parameters, query) as it may be
    logged: key-like parameters' values replaced, then every registered secret."""
    path, question, query = target.partition("?")
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if ";" in segment:
            head, _, params = segment.partition(";")
            segments[i] = head + ";" + _redact_params(params, ";")
    out = "/".join(segments)
    if question:
        out += "?" + _redact_params(query, "&")
    return scrub(out)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def loggable(text: str) -> str:
    """``text`` with control characters escaped, so a request cannot forge log lines."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
