"""The HTTP layer: the app and its guard (:mod:`~agent_core.web.app`), what views receive and return
(:mod:`~agent_core.web.request`, :mod:`~agent_core.web.responses`), helpers for views (:mod:`~agent_core.web.paging`,
:mod:`~agent_core.web.openapi`), the one table of error statuses (:mod:`~agent_core.web.errors`), the core's own views
(:mod:`~agent_core.web.views`, :mod:`~agent_core.web.discovery`) and the server: cheroot behind pgwarden's network front
(:mod:`~agent_core.web.server`, :mod:`~agent_core.web.front`, :mod:`~agent_core.web.tls`).

Nothing below this package knows of HTTP: domain code raises :mod:`agent_core.errors`.
"""
