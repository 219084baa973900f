"""Publish: one serialised record to every configured output; one failing output stops no other."""

from edgert.publish.base import Output, Publisher, SafeStateOutput
from edgert.publish.lines import JsonlOutput, StdoutOutput

# SerialOutput (edgert.publish.serial) is imported where it is configured, so that a device
# without a serial output never loads pyserial.
__all__ = ["Output", "Publisher", "SafeStateOutput", "JsonlOutput", "StdoutOutput"]
