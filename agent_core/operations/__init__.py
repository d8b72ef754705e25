"""Operations: what plugins submit and the core runs, stored so that nothing is lost.

* :mod:`~agent_core.operations.model`: an :class:`Operation` as data, listing rows and cursors;
* :mod:`~agent_core.operations.context`: the :class:`TaskContext` a running task sees;
* :mod:`~agent_core.operations.queue`: the stored queue (SQL only): insert, read, transition, prune;
* :mod:`~agent_core.operations.scheduler`: the :class:`Scheduler` that stores, lists, cancels and runs them.
"""
