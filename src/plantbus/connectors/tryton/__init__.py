"""Connector for the Tryton ERP: JSON-RPC client, sink, order source, look-ups."""
