"""What a view returns when a JSON value alone is not enough.

A view returns a JSON-serialisable value (answered 200 as JSON) or a
:class:`Response` to choose the status, add headers (``Age``, ``ETag``, a
paginated listing's ``X-Next-Cursor`` and ``Link``) or send bytes it has
already written. Plugins never touch the web framework: the web layer
(:mod:`agent_core.web.app`) turns a :class:`Response` into its answer.

::

    from agent_core.web.responses import Response

    def get_thing(request):
        return Response({"thing": 1}, headers={"Age": "3"})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class JSONText(str):
    """A body already written as JSON text (answered as it is)."""


@dataclass
class Response:
    """``body`` (a JSON value, encoded with ``json.dumps(default=str)``, or a
    :class:`JSONText` sent as it is) with ``status`` and ``headers``.

    ``data``, when given, is sent instead of ``body`` exactly as it is:
    bytes, or an iterable of byte chunks (streamed; give ``Content-Length``
    in ``headers`` when it is known). ``content_type`` defaults to JSON.
    """

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    data: bytes | Iterable[bytes] | None = None

    def payload(self) -> str | bytes | Iterable[bytes]:
        """What is sent: ``data``, or ``body`` as JSON text."""
        if self.data is not None:
            return self.data
        if isinstance(self.body, JSONText):
            return str.__str__(self.body)
        return json.dumps(self.body, default=str)
