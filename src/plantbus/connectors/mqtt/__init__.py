"""MQTT source and sink, with Sparkplug B on the source."""

from plantbus.connectors.mqtt.sink import MqttSink
from plantbus.connectors.mqtt.source import MqttSource

__all__ = ["MqttSink", "MqttSource"]
