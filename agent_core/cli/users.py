"""``pgwarden user``: add, passwd, role, delete, list in the users file."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from agent_core.cli.commands import _load
from agent_core.errors import PgwardenError


def _users(args: argparse.Namespace) -> Any:
    from agent_core.auth import UsersFile

    if args.users_file:
        return UsersFile(args.users_file)
    config, _ = _load(args)
    return UsersFile(config.users_path())


def _read_password(args: argparse.Namespace) -> str:
    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password again: "):
            raise PgwardenError("passwords do not match")
    if not password:
        raise PgwardenError("empty password")
    return password


def cmd_user(args: argparse.Namespace) -> int:
    args.users_file = args.action_users_file or args.users_file
    args.stdin = args.action_stdin or args.stdin
    users = _users(args)
    if args.action == "list":
        entries = users.load()
        width = max([len(n) for n in entries] + [4]) + 2
        for name in sorted(entries):
            print(f"{name:<{width}}{entries[name].role}")
        return 0
    if args.action == "delete":
        if not users.delete(args.username):
            raise PgwardenError(f"no user {args.username!r} in {users.path}")
        print(f"user {args.username!r} deleted")
        return 0
    exists = args.username in users.load()
    if args.action == "add" and exists:
        raise PgwardenError(f"user {args.username!r} exists: use 'pgwarden user passwd' or 'pgwarden user role'")
    if args.action in ("passwd", "role") and not exists:
        raise PgwardenError(f"no user {args.username!r}: use 'pgwarden user add'")
    try:
        if args.action == "role":
            users.set(args.username, None, args.role)
            print(f"user {args.username!r} now has the {args.role!r} role")
            return 0
        users.set(args.username, _read_password(args), getattr(args, "role", None))
    except ValueError as e:
        raise PgwardenError(str(e)) from None
    print(f"user {args.username!r} {'added' if args.action == 'add' else 'updated'} in {users.path}")
    return 0
