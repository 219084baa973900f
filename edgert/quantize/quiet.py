"""Keep onnxruntime's quantizer chatter (~300 INFO lines a run) off the user's screen unless -v."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import onnxruntime as ort

_ORT_DIR = os.path.dirname(ort.__file__) + os.sep
_ORT_WARNING, _ORT_ERROR = 2, 3   # onnxruntime's C++ log severities; WARNING is its default


class _NotFromOnnxruntime(logging.Filter):
    """Drops records below ERROR that onnxruntime's Python code logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(_ORT_DIR)


@contextlib.contextmanager
def quiet_onnxruntime() -> Iterator[None]:
    """Only onnxruntime's errors while inside, unless edgert logs at DEBUG (`edgert -v`).

    onnxruntime.quantization logs through the root logger itself (`logging.info(...)`, which
    a root-logger filter sees) and through loggers under "onnxruntime" (whose level is set);
    sessions it creates log through its C++ logger (whose default severity is raised).
    """
    if logging.getLogger("edgert").isEnabledFor(logging.DEBUG):
        yield
        return
    root, named, drop = logging.getLogger(), logging.getLogger("onnxruntime"), _NotFromOnnxruntime()
    level = named.level
    root.addFilter(drop)
    named.setLevel(logging.ERROR)
    ort.set_default_logger_severity(_ORT_ERROR)
    try:
        yield
    finally:
        root.removeFilter(drop)
        named.setLevel(level)
        ort.set_default_logger_severity(_ORT_WARNING)
