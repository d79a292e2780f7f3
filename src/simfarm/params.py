"""Typed, strict reading of a TOML table with errors that name the key path.

Every validator in simfarm (the spec itself and each workload's params)
reads its table through :class:`ParamReader`, so messages look the same
everywhere::

    experiments[1].rounds must be a positive integer, got -3
    rollouts[0]: unknown key 'n_env'; did you mean 'n_envs'?

Usage::

    r = ParamReader(params, "jobs[0]")
    steps = r.integer("steps", default=10, minimum=1)
    r.finish()          # unknown keys are errors, with a close-match hint
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from simfarm.errors import SpecError

__all__ = ["ParamReader", "REQUIRED", "did_you_mean", "describe"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Sentinel default: the key must be present.
REQUIRED: Any = _Required()


def describe(value: Any) -> str:
    """A short repr of a bad value for an error message."""
    text = repr(value)
    if isinstance(value, str):
        text = '"' + value.replace('"', '\\"') + '"'
    elif isinstance(value, bool):
        text = "true" if value else "false"
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close match exists, else a list of options."""
    options = sorted(options)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if options:
        return f"; allowed keys: {', '.join(options)}"
    return ""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class ParamReader:
    """Reads keys from one table; remembers which keys it consumed.

    Args:
        table: The mapping to read (not modified).
        where: Key path of the table for messages (``""`` at top level).
    """

    def __init__(self, table: Mapping[str, Any], where: str = "") -> None:
        if not isinstance(table, Mapping):
            raise SpecError(f"{where or 'spec'} must be a table, got {describe(table)}")
        self.table = table
        self.where = where
        self._used: set[str] = set()

    # -- plumbing ---------------------------------------------------------
    def path(self, key: str) -> str:
        """The full key path of *key* in this table."""
        return _join(self.where, key)

    def has(self, key: str) -> bool:
        """Whether *key* is present (and marks it as known)."""
        self._used.add(key)
        return key in self.table

    def _given(self, key: str, default: Any, allow_none: bool) -> tuple[bool, Any]:
        """``(True, value)`` when a value to check was given, else ``(False, result)``."""
        present, value = self._get(key, default)
        if not present or (value is None and allow_none):
            return False, value
        return True, value

    def _get(self, key: str, default: Any) -> tuple[bool, Any]:
        self._used.add(key)
        if key in self.table:
            return True, self.table[key]
        if default is REQUIRED:
            raise SpecError(f"{self.path(key)} is required but missing")
        return False, default

    def fail(self, key: str, what: str, value: Any) -> SpecError:
        """An error ``<path> must be <what>, got <value>`` to raise."""
        return SpecError(f"{self.path(key)} must be {what}, got {describe(value)}")

    def finish(self, also_allowed: Iterable[str] = ()) -> None:
        """Raise for the first key that no reader call asked for.

        Raises:
            SpecError: ``<path>: unknown key 'k'; did you mean 'x'?``
        """
        known = self._used | set(also_allowed)
        for key in self.table:
            if key not in known:
                raise SpecError(
                    f"{self.where or 'spec'}: unknown key {key!r}{did_you_mean(key, known)}"
                )

    # -- typed getters ----------------------------------------------------
    def raw(self, key: str, default: Any = REQUIRED) -> Any:
        """The value as it is, unchecked."""
        return self._get(key, default)[1]

    def integer(
        self,
        key: str,
        default: Any = REQUIRED,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        allow_none: bool = False,
    ) -> Any:
        """An ``int`` (not a bool, not a float) within [minimum, maximum]."""
        given, value = self._given(key, default, allow_none)
        if not given:
            return value
        return self.check_integer(key, value, minimum=minimum, maximum=maximum)

    def check_integer(
        self, key: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """Validate *value* as an integer for *key* (used for list items too)."""
        if minimum == 1 and maximum is None:
            what = "a positive integer"
        elif minimum == 0 and maximum is None:
            what = "a non-negative integer"
        elif minimum is not None and maximum is not None:
            what = f"an integer from {minimum} to {maximum}"
        elif minimum is not None:
            what = f"an integer >= {minimum}"
        elif maximum is not None:
            what = f"an integer <= {maximum}"
        else:
            what = "an integer"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, what, value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.fail(key, what, value)
        return int(value)

    def number(
        self,
        key: str,
        default: Any = REQUIRED,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        allow_none: bool = False,
    ) -> Any:
        """A finite ``float`` (ints accepted) within the bounds."""
        given, value = self._given(key, default, allow_none)
        if not given:
            return value
        lo = "" if minimum is None else (f"> {minimum}" if exclusive_minimum else f">= {minimum}")
        hi = "" if maximum is None else f"<= {maximum}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        what = "a finite number" + (f" {bounds}" if bounds else "")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(key, what, value)
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            raise self.fail(key, what, value)
        if maximum is not None and value > maximum:
            raise self.fail(key, what, value)
        return float(value)

    def boolean(self, key: str, default: Any = REQUIRED) -> Any:
        """``true`` or ``false``."""
        present, value = self._get(key, default)
        if present and not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def string(self, key: str, default: Any = REQUIRED, *, allow_empty: bool = False) -> Any:
        """A string (non-empty unless *allow_empty*)."""
        present, value = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, str) or (not allow_empty and not value):
            raise self.fail(key, "a non-empty string" if not allow_empty else "a string", value)
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = REQUIRED) -> Any:
        """One of *choices*, with a close-match hint when misspelt."""
        present, value = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, str) or value not in choices:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = ", ".join(f'"{c}"' for c in choices)
            raise SpecError(f"{self.path(key)} must be one of {allowed}, got {describe(value)}{hint}")
        return value

    def string_list(
        self, key: str, default: Any = REQUIRED, *, min_length: int = 1, unique: bool = True
    ) -> Any:
        """A list of non-empty strings."""
        present, value = self._get(key, default)
        if not present:
            return value
        what = f"a list of at least {min_length} non-empty string(s)"
        if not isinstance(value, list) or len(value) < min_length:
            raise self.fail(key, what, value)
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.fail(key, what, value)
        if unique and len(set(value)) != len(value):
            raise self.fail(key, "a list without duplicates", value)
        return list(value)

    def table_reader(self, key: str, *, required: bool = False) -> ParamReader | None:
        """A reader over a sub-table, or ``None`` when absent and optional."""
        present, value = self._get(key, REQUIRED if required else None)
        if not present:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(key, "a table", value)
        return ParamReader(value, self.path(key))
