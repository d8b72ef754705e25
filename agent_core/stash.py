"""A typed place for a plugin's per-agent state: ``agent.stash``.

Modelled on pytest's ``Stash``: a plugin makes a module-level
:class:`StashKey`, typed with what it holds, and keeps its state in the
agent's :class:`Stash` under it::

    from agent_core.stash import StashKey

    SAMPLER = StashKey[Sampler]()

    @hookimpl
    def agent_startup(agent):
        agent.stash[SAMPLER] = Sampler(agent)

    def view(request):
        sampler = request.agent.stash[SAMPLER]  # mypy knows: a Sampler

Each agent has its own stash, made with it and dropped with it, so several
agents in one process (tests) never see each other's state, and nothing is
keyed by ``id(agent)`` (which a later agent may reuse). Keys are compared by
identity: two plugins cannot collide, even with the same variable names.

Single operations (get, set, ``setdefault``, delete) are atomic; a plugin
that reads, computes and writes under one key from several threads keeps its
own lock.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

__all__ = ["Stash", "StashKey"]

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """A key of a :class:`Stash`; ``T`` is the type of the value it holds.

    Make one per piece of state, at module level: ``KEY = StashKey[Dashboard]()``.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        #: Shown in the ``KeyError`` of a missing key (optional).
        self.name = name

    def __repr__(self) -> str:
        return f"<StashKey {self.name}>" if self.name else f"<StashKey at {id(self):#x}>"


class Stash:
    """Values of :class:`StashKey` s, each typed by its key.

    ``stash[key] = value``, ``stash[key]`` (``KeyError`` when not set),
    ``stash.get(key, default)``, ``stash.setdefault(key, default)``,
    ``key in stash``, ``del stash[key]``, ``len(stash)``.
    """

    __slots__ = ("_storage",)

    def __init__(self) -> None:
        self._storage: dict[StashKey[Any], object] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._storage[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._storage[key])

    def get(self, key: StashKey[T], default: D) -> T | D:
        """The value of ``key``, or ``default`` when it is not set."""
        try:
            return self[key]
        except KeyError:
            return default

    def setdefault(self, key: StashKey[T], default: T) -> T:
        """The value of ``key``; when it is not set, set it to ``default`` first."""
        return cast(T, self._storage.setdefault(key, default))

    def pop(self, key: StashKey[T], default: D) -> T | D:
        """Remove ``key`` and give its value, or ``default`` when it is not set."""
        return cast("T | D", self._storage.pop(key, default))

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._storage[key]

    def __contains__(self, key: StashKey[T]) -> bool:
        return key in self._storage

    def __len__(self) -> int:
        return len(self._storage)
