"""Publish: one serialised record to every configured output; one failing output stops no other."""

from edgert.publish.base import Output, Publisher
from edgert.publish.lines import JsonlOutput, StdoutOutput

__all__ = ["Output", "Publisher", "JsonlOutput", "StdoutOutput"]
