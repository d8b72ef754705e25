"""Modes of the files the agent creates, and warnings about loose ones.

The agent's files hold secrets or what leads to them: the operations store
(session hashes, the audit log, operations), the users file (password
hashes), the log (user names, database names, statements of operations) and
the config file (the agent key, the PostgreSQL password). The agent creates
its files 0600 and its directories 0700 whatever the process umask (a umask
can only take bits away); SQLite creates the store's ``-wal`` and ``-shm``
files itself with the main file's permissions, so creating the main file
0600 first is enough for the three.

:func:`exposed_files` lists the existing files whose modes let other OS
users read them; ``pgwarden check-config`` prints them and ``pgwarden
serve`` logs them at start-up. They never fail either command: a mode is the operator's call
(a log shipper in the agent's group, a config file managed by root), and a
warning that stopped the agent would do more harm than the exposure it
names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dirs(path: str) -> None:
    """Create ``path`` and its missing parents, each ``0700``; existing
    directories are left as they are."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another process
            pass


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that creates a missing file ``0600``."""
    return os.open(path, flags, PRIVATE_FILE)


def create_private(path: str) -> None:
    """Create ``path`` empty and ``0600`` (its directory ``0700``) if it does
    not exist; an existing file is left as it is."""
    if os.path.exists(path):  # never opened for writing here: it may be read-only, or not ours
        return
    private_dirs(os.path.dirname(os.path.abspath(path)))
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:  # made meanwhile by another process
        pass


def exposure(path: str, what: str) -> str | None:
    """Why ``path`` is readable or writable by other OS users, or None.

    World bits always count; group bits count unless the file's group is the
    current process's own group (``root:postgres 0640`` for an agent running
    as ``postgres`` is fine: only the agent's group reads it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    own_group = st.st_gid == os.getegid()
    who = []
    for bit, access in ((0o4, "readable"), (0o2, "writable")):
        by = []
        if mode & (bit << 3) and not own_group:
            by.append(f"group {_group(st.st_gid)}")
        if mode & bit:
            by.append("every user")
        if by:
            who.append(f"{access} by {' and '.join(by)}")
    if not who:
        return None
    return f"{path} ({what}) has mode {mode:04o}: {', '.join(who)}; chmod 600 {path}"


def _group(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def secrets_in(raw: Any, schemas: Iterable[Any]) -> list[str]:
    """``section.key`` of the secret options (``Option.secret``) the config
    file itself sets (not the environment)."""
    found = []
    for schema in schemas:
        for name, option in schema.options.items():
            if option.secret and (raw.sections.get(schema.name, {}).get(name) or "").strip():
                found.append(f"{schema.name}.{name}")
    return found


def exposed_files(config: Any, raw: Any) -> list[str]:
    """Files of this configuration that other OS users can read or write:
    the config file (when it sets a secret, or when it is writable by
    others), the users file, the SQLite store and its -wal/-shm files, the
    TLS private key, the log file; and the signing public key when others
    can write it."""
    out = []
    if raw.path:
        held = secrets_in(raw, config.schemas.values())
        reason = exposure(raw.path, "config file holding " + ", ".join(held) if held else "config file")
        if reason and (held or _writable_by_others(raw.path)):
            out.append(reason)
    reason = exposure(config.users_path(), "users file: password hashes")
    if reason:
        out.append(reason)
    url = config.store_url()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        for suffix in ("", "-wal", "-shm"):
            reason = exposure(path + suffix, "operations store: sessions, audit log")
            if reason:
                out.append(reason)
    tls_key = config.agent.get("tls_key")
    if tls_key:
        reason = exposure(tls_key, "TLS private key")
        if reason:
            out.append(reason)
    public_key = config.section("signing").get("public_key")
    if public_key and _writable_by_others(public_key):
        # readable by all is fine (a public key); writable lets another user sign as the UI
        mode = stat.S_IMODE(os.stat(public_key).st_mode)
        out.append(
            f"{public_key} (signing public key: who can replace it can sign requests as the UI) has mode"
            f" {mode:04o}: writable by other users; chmod 644 {public_key}"
        )
    log_file = config.agent.get("log_file")
    if log_file and log_file not in ("stderr", "syslog"):
        reason = exposure(log_file, "log file")
        if reason:
            out.append(reason)
    return out


def _writable_by_others(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != os.getegid()))
