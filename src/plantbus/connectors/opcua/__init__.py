"""The OPC UA source: subscriptions to data changes and events of configured nodes."""
