"""Publish: each frame's one record, claimed by the herald and handed to every output without waiting."""

from edgert.publish.base import NullOutput, Output, Post, Publisher

# SerialOutput and MqttOutput are imported where they are configured, so that a device
# without them never loads pyserial or paho.
__all__ = ["NullOutput", "Output", "Post", "Publisher"]
