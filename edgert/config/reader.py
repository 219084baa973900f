"""A typed reader over one TOML table, so every validation error names the file and dotted key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from edgert.errors import ConfigError

_MISSING = object()
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a whole number",
               float: "a number", list: "a list", dict: "a table"}


class Section:
    """One table of the config: reads keys with types and ranges, then rejects leftovers."""

    def __init__(self, file: Path, prefix: str, table: dict[str, Any]) -> None:
        self.file, self.prefix, self.table = file, prefix, table
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str, fix: str = "") -> ConfigError:
        return ConfigError(str(self.file), self.key(name), problem, fix)

    def has(self, name: str) -> bool:
        return name in self.table

    def raw(self, name: str, default: Any = _MISSING, fix: str = "") -> Any:
        self._seen.add(name)
        if name in self.table:
            return self.table[name]
        if default is _MISSING:
            raise self.error(name, "is missing", fix or "add it")
        return default

    def _typed(self, name: str, value: Any, kind: type) -> Any:
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            got = type(value).__name__
            raise self.error(name, f"must be {_TYPE_NAMES[kind]}, not {got} {value!r}")
        return value

    def str(self, name: str, default: Any = _MISSING, choices: Sequence[str] = (),
            fix: str = "") -> Any:
        value = self.raw(name, default, fix)
        if value is None or value is default and default is not _MISSING:
            return value
        value = self._typed(name, value, str)
        if choices and value not in choices:
            raise self.error(name, f"is {value!r}", "use one of " + ", ".join(map(repr, choices)))
        if not choices and not value.strip():
            raise self.error(name, "is empty", fix or "give it a value")
        return value

    def bool(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        return value if value is default else self._typed(name, value, bool)

    def number(self, name: str, default: Any = _MISSING, *, lo: float = -math.inf,
               hi: float = math.inf, lo_open: bool = False, integer: bool = False) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        value = self._typed(name, value, int if integer else float)
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            low = f"above {lo:g}" if lo_open else f"at least {lo:g}"
            rng = low if hi == math.inf else f"{low} and at most {hi:g}"
            raise self.error(name, f"is {value!r}", f"it must be {rng}")
        return value

    def numbers(self, name: str, count: int | None, default: Any = _MISSING, *,
                lo: float = -math.inf, hi: float = math.inf, integer: bool = False) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        kind = "whole numbers" if integer else "numbers"
        want = f"a list of {count} {kind}" if count else f"a list of {kind}"
        if not isinstance(value, list) or (count is not None and len(value) != count) or any(
                isinstance(v, bool) or not isinstance(v, int if integer else (int, float))
                or not math.isfinite(v) or v < lo or v > hi for v in value):
            bound = "" if lo == -math.inf else f", each at least {lo:g}"
            bound += "" if hi == math.inf else f" and at most {hi:g}"
            raise self.error(name, f"is {value!r}", f"it must be {want}{bound}")
        return tuple(int(v) if integer else float(v) for v in value)

    def strings(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"is {value!r}", 'it must be a list of strings, e.g. ["a", "b"]')
        return tuple(value)

    def table_(self, name: str) -> Section:
        value = self.raw(name, {})
        if not isinstance(value, dict):
            raise self.error(name, f"must be a table ([{self.key(name)}]), not {value!r}")
        return Section(self.file, self.key(name), value)

    def tables(self, name: str) -> list[Section]:
        value = self.raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(name, "must be an array of tables", f"write it as [[{self.key(name)}]]")
        return [Section(self.file, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def path(self, name: str, default: Any = _MISSING, *, must_exist: bool = True,
             is_dir: bool = False, fix: str = "") -> Any:
        value = self.str(name, default)
        if value is None or value is default and default is not _MISSING:
            return value
        path = (self.file.parent / Path(value).expanduser()).resolve()
        if must_exist and not (path.is_dir() if is_dir else path.is_file()):
            what = "folder" if is_dir else "file"
            raise self.error(name, f"names {value!r}, but there is no {what} {path}",
                             fix or "fix the path (relative paths start at the config file)")
        return path

    def done(self) -> None:
        """Reject keys nobody read: a typo must not silently fall back to a default."""
        for name in self.table:
            if name not in self._seen:
                raise self.error(name, "is not a known key",
                                 "remove it or check its spelling (see docs/configuration.md)")
