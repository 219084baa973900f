"""One error hierarchy, so the CLI can tell a user's mistake (exit 2) from a failure of the world."""

from __future__ import annotations


class EdgertError(Exception):
    """Base of every error edgert raises on purpose."""


class UsageError(EdgertError):
    """The user asked for something impossible: the CLI prints the sentence and exits 2."""


class ConfigError(UsageError):
    """A configuration file is wrong; the message names the file, the dotted key and the fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        where = f"{file}: {key}" if key else file
        sentence = f"{where}: {problem}"
        if fix:
            sentence += f"; {fix}"
        super().__init__(sentence.rstrip(".") + ".")


class ModelError(UsageError):
    """A model file is unusable (not ONNX, wrong shape, no output a decoder can read)."""


class DecoderError(ModelError):
    """A decoder's result breaks the decoder contract: counted per frame, fatal at warm-up."""


class SourceError(EdgertError):
    """A frame source failed; live sources retry, so the loop usually only counts these."""


class SourceUnavailable(SourceError, UsageError):
    """A source that can never work as configured (missing file, no GStreamer in this OpenCV)."""


class OutputError(EdgertError):
    """An output failed to deliver; counted and retried, never fatal to the loop."""
