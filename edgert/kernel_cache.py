"""Compiled kernels are cached in a folder the user owns, never inside the installed package.

numba's default writes beside the source, into site-packages/edgert/**/__pycache__; pip does not
know those files, so a later `pip install -e .` leaves the folders behind and Python imports the
leftover `edgert/` as a namespace package that shadows the editable install.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numba
from numba.core import event

log = logging.getLogger("edgert")

NOTICE = "edgert: compiling kernels (first start only)…"


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """EDGERT_CACHE_DIR, else systemd's CACHE_DIRECTORY, else $XDG_CACHE_HOME/edgert or
    ~/.cache/edgert. A folder that is set but unusable is reported, not silently replaced."""
    if environ.get("EDGERT_CACHE_DIR"):
        return Path(environ["EDGERT_CACHE_DIR"])
    if environ.get("CACHE_DIRECTORY"):   # CacheDirectory= in a unit; several are ':'-separated
        return Path(environ["CACHE_DIRECTORY"].split(":")[0])
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):               # the XDG spec: a relative value is to be ignored
        return Path(xdg) / "edgert"
    # expanduser falls back to the password database when HOME is unset, and returns "~"
    # itself when there is no home at all (checked for being absolute in `enable`).
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".cache" / "edgert"


def numba_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """numba's own files: NUMBA_CACHE_DIR when someone set it on purpose, else cache_root()/numba."""
    if environ.get("NUMBA_CACHE_DIR"):
        return Path(environ["NUMBA_CACHE_DIR"])
    return cache_root(environ) / "numba"


@functools.cache   # numba's cache folder is process-wide; the warning is said once, not per module
def enable() -> bool:
    """Point numba's cache at `numba_cache_dir()`; False, after one warning, if it is unusable.

    Must run before any kernel is decorated: numba picks a function's cache folder when the
    decorator runs (and raises there if `cache=True` finds no writable folder), so an unusable
    folder means decorating without `cache=True` — every start then compiles.
    """
    folder = numba_cache_dir()
    try:
        if not folder.is_absolute():
            raise OSError("no home folder")
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()   # the check numba itself makes
    except OSError as e:
        log.warning("cannot use %s for compiled kernels (%s), so they compile on every start "
                    "(about 10 s); set EDGERT_CACHE_DIR to a writable folder",
                    folder, e.strerror or e)
        return False
    numba.config.CACHE_DIR = str(folder)
    event.register("numba:compile", _CompileNotice())
    return True


def jit_options() -> dict[str, Any]:
    """The options every edgert kernel compiles with: cached where `enable()` found a folder,
    releasing the GIL (the grabber and guard threads run beside them), no fast-math (results
    must match the reference twins)."""
    return dict(cache=enable(), nogil=True, fastmath=False)


class _CompileNotice(event.Listener):
    """Says so on stderr the first time an edgert kernel really compiles, so a ~10 s silent first
    start does not look like a hang. A cache hit is not a "numba:compile" event."""

    said = False

    def on_start(self, ev: event.Event) -> None:
        func = getattr(ev.data.get("dispatcher"), "py_func", None)
        if not self.said and getattr(func, "__module__", "").startswith("edgert."):
            self.said = True
            print(NOTICE, file=sys.stderr, flush=True)

    def on_end(self, ev: event.Event) -> None:
        pass
