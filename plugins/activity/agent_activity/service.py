"""The activity plugin's work for one agent: listings, lock graph, kill.

One :class:`Activity` exists per running agent (tests run several agents in
one process), kept in ``agent.stash`` under :data:`KEY`: :func:`attach` makes
it at start-up, :func:`get` finds it for a request, :func:`detach` stops it
at shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from agent_core.errors import DomainError, StartupError, Unavailable, Unsupported, first_line
from agent_core.stash import Stash, StashKey

from .queries import LOCK_TARGET, Queries, UnsupportedVersion, decode, for_version
from .sampler import UNKNOWN, Metrics, Sampler
from .store import record_requested, record_results

log = logging.getLogger("pgwarden.activity")

#: The agent's Activity (between agent_startup and agent_shutdown).
KEY: StashKey[Activity] = StashKey("activity")
_attach_lock = threading.Lock()


def attach(agent: Any) -> Activity:
    with _attach_lock:
        stash: Stash = agent.stash
        instance = stash.get(KEY, None)
        if instance is None:
            instance = stash[KEY] = Activity(agent)
    return instance


def get(agent: Any) -> Activity:
    stash: Stash = agent.stash
    instance = stash.get(KEY, None)
    if instance is None:
        raise Unavailable("The activity plugin is not started.")
    return instance


def detach(agent: Any) -> None:
    stash: Stash = agent.stash
    instance = stash.pop(KEY, None)
    if instance is not None:
        instance.stop()


def root_blockers(pid: int, graph: dict[int, list[int]]) -> list[int]:
    """The backends at the root of ``pid``'s wait chains: those reached by
    following "is blocked by" edges that wait for nobody. A deadlock cycle
    (before the deadlock detector breaks it) has no root."""
    seen: set[int] = set()
    stack = list(graph.get(pid, []))
    roots: set[int] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        blockers = graph.get(current)
        if blockers:
            stack.extend(blockers)
        elif current != pid:
            roots.add(current)
    return sorted(roots)


def _target(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row["target_" + c] for c in LOCK_TARGET)


class Activity:
    def __init__(self, agent: Any):
        self.agent = agent
        settings = agent.config.section("activity")
        self.limit: int = settings["limit"]
        self.show_idle: bool = settings["show_idle"]
        self.kill_wait: float = settings["kill_wait"]
        self.read_role_sees_queries: bool = settings["read_role_sees_queries"]
        self.kill_max_pids: int = settings["kill_max_pids"]
        self.kills_max: int = settings["kills_max"]
        self.kills_max_age: float = settings["kills_max_age"]
        timeout = agent.config.postgresql["statement_timeout"]
        if self.kill_wait >= timeout:
            raise StartupError(
                f"activity.kill_wait ({self.kill_wait:g} s) must be less than"
                f" postgresql.statement_timeout ({timeout} s), which would cancel the wait"
            )
        self.sampler = Sampler(settings["sample_interval"], self._all_pids)
        #: Backends terminated and refused by :meth:`kill` since start (GET /metrics).
        self.kills = {"terminated": 0, "refused": 0}

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()

    # -- database access ----------------------------------------------------

    @contextmanager
    def cursor(self, dbname: Optional[str] = None) -> Iterator[tuple[Any, Queries]]:
        """A dict cursor on a pooled autocommit connection, text as bytes
        (decoded by :func:`decode`), and the statements for its server."""
        with self.agent.postgres.connect(dbname) as conn:
            try:
                queries = for_version(conn.server_version)
            except UnsupportedVersion as e:
                raise Unsupported(str(e)) from None
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)
                yield cur, queries

    def own_pids(self) -> list[int]:
        return sorted(self.agent.postgres.own_pids.copy())

    def _local(self) -> bool:
        """PostgreSQL runs on this host: its processes can be read with psutil."""
        return self.agent.postgres.locality().local

    def _all_pids(self) -> list[int]:
        """The backends the sampler reads; none when PostgreSQL runs elsewhere."""
        if not self._local():
            return []
        with self.cursor() as (cur, q):
            cur.execute(q.pids)
            return [r["pid"] for r in cur.fetchall()]

    # -- rows -----------------------------------------------------------------

    @staticmethod
    def row(r: dict[str, Any], metrics: Metrics) -> dict[str, Any]:
        """The fields every listing shows, from a query row and its metrics."""
        encoding = decode(r["encoding"])
        return {
            "pid": r["pid"],
            "database": decode(r["database"]),
            "user": decode(r["user"]),
            "client": decode(r["client"]),
            "application_name": decode(r["application_name"]),
            **metrics.as_dict(),
            "wait": None if r["waiting"] is None else "Y" if r["waiting"] else "N",
            "duration": r["duration"],
            "state": decode(r["state"]),
            "query": decode(r["query"], encoding),
        }

    def sees_queries(self, role: Optional[str]) -> bool:
        """Whether a client of ``role`` is shown the query text of sessions:
        ``admin`` always, ``read`` only with ``[activity] read_role_sees_queries``."""
        return role == "admin" or self.read_role_sees_queries

    def with_metrics(self, rows: list[dict[str, Any]], queries: bool = True) -> list[dict[str, Any]]:
        """Rows with their processes' metrics (null when PostgreSQL is remote:
        its pids are not processes of this host); ``query`` null unless ``queries``."""
        metrics = self.sampler.latest(r["pid"] for r in rows) if self._local() else {}
        out = [self.row(r, metrics.get(r["pid"], UNKNOWN)) for r in rows]
        if not queries:
            for row in out:
                row["query"] = None
        return out

    def activity(
        self, limit: Optional[int] = None, offset: int = 0, more: bool = False, queries: bool = True
    ) -> list[dict[str, Any]]:
        """Client backends but the agent's own, longest running first: at most
        ``limit`` after the first ``offset`` (one more with ``more``, to tell
        whether a next page exists); ``query`` null unless ``queries``."""
        count = (limit or self.limit) + (1 if more else 0)
        with self.cursor() as (cur, q):
            cur.execute(q.backends, {"own": self.own_pids(), "idle": self.show_idle, "limit": offset + count})
            rows = cur.fetchall()[offset:]
        return self.with_metrics(rows, queries)

    # -- locks ----------------------------------------------------------------

    def _waits(self, cur: Any, q: Queries) -> list[dict[str, Any]]:
        """One row per backend waiting for a lock (any backend, the agent's too,
        so that the graph is complete), longest running first."""
        cur.execute(q.lock_waits, {"own": []})
        out: dict[int, dict[str, Any]] = {}
        for r in cur.fetchall():
            out.setdefault(r["pid"], r)
        return list(out.values())

    def _relation_names(self, cur: Any, q: Queries, locks: Iterable[dict[str, Any]]) -> dict[tuple[int, int], str]:
        """Schema-qualified names of the relations of these locks, wherever they
        are: the current database (and shared catalogs) through ``cur``, other
        databases through a short-lived connection each (a pooled one would
        keep the database busy and make DROP DATABASE fail). Unresolvable
        relations are left out (shown by OID)."""
        wanted: dict[int, set[int]] = {}
        dbnames: dict[int, str] = {}
        for lock in locks:
            if lock["lock_relation"] is None or lock["lock_database"] is None:
                continue
            wanted.setdefault(lock["lock_database"], set()).add(lock["lock_relation"])
            if lock["lock_dbname"] is not None:
                dbnames[lock["lock_database"]] = decode(lock["lock_dbname"])
        if not wanted:
            return {}
        cur.execute("SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()")
        here = cur.fetchone()["oid"]
        names: dict[tuple[int, int], str] = {}
        local = wanted.pop(here, set()) | wanted.pop(0, set())
        if local:
            cur.execute(q.relations, {"oids": sorted(local)})
            for r in cur.fetchall():
                names[(here, r["oid"])] = names[(0, r["oid"])] = decode(r["name"])
        for db, oids in wanted.items():
            if db in dbnames:
                for oid, name in self._names_in(dbnames[db], q, oids).items():
                    names[(db, oid)] = name
        return names

    def _names_in(self, dbname: str, q: Queries, oids: set[int]) -> dict[int, str]:
        pg = self.agent.postgres
        try:
            conn = pg.dedicated(dbname, timeouts=True)
        except DomainError as e:
            log.debug("cannot resolve relations of database %r: %s", dbname, e.message)
            return {}
        try:
            with conn.cursor() as cur:
                psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)
                cur.execute(q.relations, {"oids": sorted(oids)})
                return {oid: decode(name) for oid, name in cur.fetchall()}
        except psycopg2.Error as e:
            log.debug("cannot resolve relations of database %r: %s", dbname, first_line(e))
            return {}
        finally:
            pg.release(conn)

    @staticmethod
    def _relation(lock: Optional[dict[str, Any]], names: dict[tuple[int, int], str]) -> str:
        """Schema-qualified name; the OID (digits, no dot) if it cannot be
        resolved; ``""`` for a lock on no relation."""
        if lock is None or lock["lock_relation"] is None:
            return ""
        return names.get((lock["lock_database"], lock["lock_relation"]), str(lock["lock_relation"]))

    def waiting(self, queries: bool = True) -> list[dict[str, Any]]:
        """Backends waiting for a lock, with the lock they want, who blocks
        them directly (``blocked_by``) and at the root (``root_blockers``)
        (``query`` null unless ``queries``)."""
        own = set(self.own_pids())
        with self.cursor() as (cur, q):
            waits = self._waits(cur, q)
            graph = {w["pid"]: list(w["blocked_by"] or []) for w in waits}
            rows = [w for w in waits if w["pid"] not in own]
            names = self._relation_names(cur, q, rows)
        out = []
        for w, row in zip(rows, self.with_metrics(rows, queries)):
            row.update(
                relation=self._relation(w, names),
                type=decode(w["lock_type"]),
                mode=decode(w["lock_mode"]),
                blocked_by=graph[w["pid"]],
                root_blockers=root_blockers(w["pid"], graph),
            )
            out.append(row)
        return out

    def blocking(self, queries: bool = True) -> list[dict[str, Any]]:
        """Backends holding a lock others wait for: root blockers first, then
        longest running. ``relation``/``type``/``mode`` describe the lock it
        holds that its longest-running waiter wants; ``blocks`` and
        ``blocked_by`` are the direct edges of the wait graph; ``root`` is true
        for a blocker that waits for nobody. ``query`` null unless ``queries``."""
        own = set(self.own_pids())
        with self.cursor() as (cur, q):
            waits = self._waits(cur, q)
            graph = {w["pid"]: list(w["blocked_by"] or []) for w in waits}
            blocks: dict[int, list[int]] = {}
            wanted: dict[int, tuple[Any, ...]] = {}
            for w in waits:  # longest running waiter first
                for b in graph[w["pid"]]:
                    blocks.setdefault(b, []).append(w["pid"])
                    wanted.setdefault(b, _target(w))
            pids = sorted(b for b in blocks if b and b not in own)
            if not pids:
                return []
            cur.execute(q.backends_by_pid, {"own": sorted(own), "pids": pids})
            rows = cur.fetchall()
            cur.execute(q.locks_of, {"pids": pids})
            held: dict[int, dict[str, Any]] = {}
            for lock in sorted(cur.fetchall(), key=lambda r: not r["granted"]):  # granted first
                if _target(lock) == wanted.get(lock["pid"]):
                    held.setdefault(lock["pid"], lock)
            names = self._relation_names(cur, q, held.values())
        out = []
        for r, row in zip(rows, self.with_metrics(rows, queries)):
            lock = held.get(r["pid"])
            row.update(
                relation=self._relation(lock, names),
                type=decode(lock["lock_type"]) if lock else None,
                mode=decode(lock["lock_mode"]) if lock else None,
                blocks=blocks[r["pid"]],
                blocked_by=graph.get(r["pid"], []),
                root=r["pid"] not in graph,
            )
            out.append(row)
        out.sort(key=lambda row: (not row["root"], -(row["duration"] or 0.0)))
        return out

    # -- kill -----------------------------------------------------------------

    def kill(self, pids: list[int], requested_by: str) -> list[dict[str, Any]]:
        """Terminate client backends of this instance; refuse anything else.

        Each pid is checked and terminated in one statement that only matches
        a client backend, so a pid that changed meanwhile is not signalled.
        Every pid is recorded in ``activity_kills``, refused ones too: written
        before any is signalled (a store failure then: 503, nothing signalled)
        and completed with the results before the answer (a failure then: 503
        saying which backends were terminated)."""
        store = self.agent.store
        stamp = record_requested(store, requested_by, pids, self.kills_max, self.kills_max_age)
        own = set(self.own_pids())
        results: list[dict[str, Any]] = []
        wait_ms = int(self.kill_wait * 1000)
        with self.cursor() as (cur, q):
            cur.execute(q.kill_targets, {"pids": pids})
            targets = {r["pid"]: r for r in cur.fetchall()}
            for pid in pids:
                target = targets.get(pid)
                result: dict[str, Any] = {"pid": pid, "killed": False}
                if target is not None:
                    result["database"] = decode(target["database"])
                    result["user"] = decode(target["user"])
                backend_type = decode(target["backend_type"]) if target else None
                if pid in own:
                    result["reason"] = "one of the agent's own connections"
                elif target is None:
                    result["reason"] = "not a backend of this PostgreSQL instance"
                elif backend_type != "client backend":
                    if target["leader_pid"]:
                        result["reason"] = f"not a client backend: {backend_type} of backend {target['leader_pid']}"
                    else:
                        result["reason"] = f"not a client backend: {backend_type}"
                else:
                    try:
                        cur.execute(q.terminate, {"pid": pid, "wait_ms": wait_ms})
                        done = cur.fetchone()
                    except psycopg2.Error as e:
                        result["reason"] = first_line(e)
                    else:
                        if done is None:
                            result["reason"] = "no longer a client backend (it exited meanwhile)"
                        elif done["killed"]:
                            result["killed"] = True
                        elif q.terminate_waits and wait_ms:
                            result["reason"] = f"signalled, but still running after {self.kill_wait:g} s"
                        else:
                            result["reason"] = "PostgreSQL could not signal it"
                results.append(result)
        killed = [r["pid"] for r in results if r["killed"]]
        self.kills["terminated"] += len(killed)
        self.kills["refused"] += len(results) - len(killed)
        try:
            record_results(store, requested_by, stamp, results)
        except Exception as e:  # the store failed: say what was done all the same, in a short line
            cause = e.message if isinstance(e, DomainError) else first_line(e)
            shown = ", ".join(map(str, killed[:20])) + (f" and {len(killed) - 20} more" if len(killed) > 20 else "")
            log.error("kill by %s: %d terminated, results not recorded: %s", requested_by, len(killed), cause[:500])
            raise Unavailable(
                f"{len(killed)} of {len(results)} backends terminated ({shown or 'none'}), but the results"
                f" could not be recorded in activity_kills (rows left as requested): {cause[:500]}",
            ) from None
        for r in results:
            if r["killed"]:
                log.info("%s terminated backend %s (%s@%s)", requested_by, r["pid"], r.get("user"), r.get("database"))
        return [
            {"pid": r["pid"], "killed": r["killed"], **({"reason": r["reason"]} if "reason" in r else {})}
            for r in results
        ]
