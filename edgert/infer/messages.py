"""onnxruntime's exceptions as one readable clause: the explanation is often on its later lines."""

from __future__ import annotations

import re

# "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : " says nothing the rest of the message does not.
_STATUS = re.compile(r"^\s*\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*")
# "/onnxruntime_src/…/reshape_helper.h:84 onnxruntime::ReshapeHelper::ReshapeHelper(…) " is
# where in ORT's C++ the check sits: noise to a user, who needs the sentence after it.
_SOURCE = re.compile(r"\S+\.(?:cc|cpp|cu|h|hpp):\d+\s+(?:[\w:~<>]+\([^()]*\)(?:\s*const)?\s+)?")
LIMIT = 2000   # a message longer than this is cut: records and log lines stay readable


def ort_message(exc: BaseException) -> str:
    """The whole message on one line, without ORT's status prefix or C++ source locations."""
    text = _SOURCE.sub("", _STATUS.sub("", str(exc)))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    joined = lines[0]
    for ln in lines[1:]:   # "… for the following indices" / "index: 2 Got: 320 Expected: 416"
        joined += (" " if joined[-1] in ".:;," else "; ") + ln
    joined = joined.rstrip(". ")
    return joined if len(joined) <= LIMIT else joined[:LIMIT - 1] + "…"
