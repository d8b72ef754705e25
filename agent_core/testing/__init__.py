"""Test harness for pgwarden and its plugins: a pytest plugin module.

Enable it in your ``conftest.py``::

    pytest_plugins = ["agent_core.testing"]

Fixtures:

``pg_cluster`` (session)
    A throwaway PostgreSQL cluster (:class:`Cluster`) made with ``initdb`` and
    ``pg_ctl`` (run as the ``postgres`` OS user when the tests run as root), on
    a free port and a short socket directory, always torn down. Skips, naming
    what to install, when PostgreSQL's server binaries are missing.
``make_agent`` (function)
    ``make_agent(plugins={"name": module}, config={...}, users={...})`` builds
    and starts a real agent served by cheroot on 127.0.0.1 (free port) and
    returns a :class:`RunningAgent`; every agent is stopped at teardown. Only
    the plugins given are loaded (no entry-point autoload). ``users`` maps a
    name to a password (an ``admin``) or to ``(password, role)``; default
    ``{"alice": PASSWORD}``.
``agent``
    ``make_agent()`` with no plugin: the core alone.
``client``
    A :class:`Client` logged in as ``alice`` on ``agent``.

``databases`` (function)
    :class:`Databases`: ``databases.create("prefix")`` makes a database named
    ``prefix_<8 hex>`` on ``pg_cluster`` (optionally with ``CREATE DATABASE``
    options and a setup script run in it) and returns its name; every one is
    dropped ``WITH (FORCE)`` (PostgreSQL 13+) at teardown.
``backends`` (function)
    :class:`Backends`: real PostgreSQL sessions on ``pg_cluster``: ``open()``,
    ``idle(statement)``, ``run(statement)`` in a thread (it may block on a
    lock: a :class:`Held`), ``hold(statement)`` run in a thread and waited for
    (``"BEGIN; LOCK TABLE t"`` keeps its lock), ``wait_state(pid, "active",
    "Lock")``, ``gone(pid)``. At teardown, before ``databases`` are dropped,
    statements still running are canceled, threads joined, transactions
    rolled back and connections closed.

Tests talk to the agent over real HTTP with :class:`Client`.

A test that runs ``pgwarden serve`` itself, as a process, uses :func:`serve`
(started, waited for with a deadline, stopped at the end) and
:func:`stop_process` for any subprocess (stopped with a bounded wait, its
output collected).

The users the fixtures write are hashed with :data:`TEST_SCRYPT`, cheap scrypt
parameters (:func:`add_user`): a login verifies with the parameters stored in
the hash, so the tests' logins cost microseconds, not ~65 ms each. Only the
test harness does this: ``pgwarden user`` and ``pgwarden setup`` hash with
:mod:`agent_core.auth`'s own parameters, and so does any test that calls
:meth:`~agent_core.auth.UsersFile.set`. :class:`Clock` moves time forward
where the code has a clock seam, instead of sleeping.

The names are defined in modules named for what they hold, all imported here
(the fixtures too: pytest finds them in this module):
:mod:`~agent_core.testing.fixtures` (the fixtures), :mod:`~agent_core.testing.credentials`
(:data:`KEY`, :data:`PASSWORD`, :func:`add_user`), :mod:`~agent_core.testing.http_client`
(:class:`Client`, :class:`Response`, :class:`TemboardSigner`), :mod:`~agent_core.testing.agents`
(:class:`RunningAgent`, :func:`agent_config`), :mod:`~agent_core.testing.helpers` (:func:`wait_for`,
:func:`run_now`, :class:`Clock`, :func:`certificate_files`), :mod:`~agent_core.testing.postgres`
(:class:`Databases`, :class:`Backends`, :class:`Held`), :mod:`~agent_core.testing.processes`
(:func:`serve`, :func:`stop_process`), :mod:`~agent_core.cluster` (:class:`Cluster`) and
:mod:`~agent_core.testing.peers`.
"""

from __future__ import annotations

from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir, free_port
from agent_core.testing.agents import RunningAgent, agent_config
from agent_core.testing.credentials import KEY, PASSWORD, TEST_SCRYPT, add_user
from agent_core.testing.fixtures import (
    agent,
    backends,
    client,
    databases,
    make_agent,
    pg_cluster,
    throwaway_cluster,
)
from agent_core.testing.helpers import Clock, certificate_files, run_now, wait_for
from agent_core.testing.http_client import Client, Response, TemboardSigner
from agent_core.testing.postgres import Backends, Databases, Held
from agent_core.testing.processes import ServedAgent, serve, stop_process

__all__ = [
    "INSTALL_HINT",
    "KEY",
    "PASSWORD",
    "TEST_SCRYPT",
    "Backends",
    "Client",
    "Clock",
    "Cluster",
    "Databases",
    "Held",
    "Response",
    "RunningAgent",
    "ServedAgent",
    "TemboardSigner",
    "add_user",
    "agent",
    "agent_config",
    "backends",
    "certificate_files",
    "client",
    "databases",
    "find_bindir",
    "free_port",
    "make_agent",
    "pg_cluster",
    "run_now",
    "serve",
    "stop_process",
    "throwaway_cluster",
    "wait_for",
]
