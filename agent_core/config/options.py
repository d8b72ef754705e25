"""Options and sections of the configuration, and how a value is read.

Every section is described by a :class:`SectionSchema` of :class:`Option` s
(plugins import :class:`Option` from :mod:`agent_core.hookspecs`). The text of
a value is converted to the option's type, then checked against its
``choices``, ``minimum`` and ``validator``; a ``ValueError`` gives the reason
of a ``section.key: reason`` problem (:func:`agent_core.config.validate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One option of a config section.

    ``type`` is ``str``, ``int``, ``float``, ``bool`` or ``list`` (comma
    separated strings). ``default`` is used when the key is absent (``None``
    with ``required=False`` means "unset"). ``choices`` restricts the value.
    ``validator(value)`` may raise ``ValueError`` whose text becomes the
    reason in ``section.key: reason``. ``minimum`` bounds numbers.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    validator: Callable[[Any], Any] | None = field(default=None, compare=False)
    secret: bool = False


class SectionSchema:
    """The options of one config section, in declaration order."""

    def __init__(self, name: str):
        self.name = name
        self.options: dict[str, Option] = {}

    def add(self, option: Option) -> None:
        if not isinstance(option, Option):
            raise TypeError(f"[{self.name}] add() takes an Option, not {type(option).__name__}")
        if option.name in self.options:
            raise ValueError(f"[{self.name}] option {option.name!r} declared twice")
        self.options[option.name] = option


def _convert(option: Option, raw: str) -> Any:
    """Turn the text of a value into the option's type (ValueError: reason)."""
    raw = raw.strip()
    if option.type is bool:
        low = raw.lower()
        if low in ("1", "yes", "true", "on"):
            return True
        if low in ("0", "no", "false", "off"):
            return False
        raise ValueError(f"expected a boolean (yes/no), got {raw!r}")
    if option.type is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if option.type is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if option.type is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _check(option: Option, value: Any) -> Any:
    if option.choices and value not in option.choices:
        raise ValueError(f"must be one of {', '.join(map(str, option.choices))}, got {value!r}")
    if option.minimum is not None and value < option.minimum:
        raise ValueError(f"must be at least {option.minimum}")
    if option.validator is not None:
        result = option.validator(value)
        if result is not None:
            value = result
    return value
