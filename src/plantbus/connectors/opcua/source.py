"""The OPC UA source: subscribe to nodes of a server and ingest mapped events.

The source connects with an asyncua Client, creates one subscription for
the data changes of all `data_change` nodes and one per `event` node, and
maps every notification with its node's `NodeMapper`. When the connection
drops (the server restarts, the network fails, the client's watchdog gets
no response), the source closes the client and waits with exponential
backoff. Then it connects again with a new session and new subscriptions.
A new subscription sends the current value of each node again. The mapper
skips it when it equals the last one, and event ids are derived from node,
type, time and value, so the log also drops repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import struct_to_binary
from asyncua.ua.uaerrors import UaError

from plantbus.config.model import OpcUaSourceConfig
from plantbus.connectors.base import Ingest, Reject, Source
from plantbus.connectors.opcua.mapping import (
    NodeMapper,
    Notification,
    NotificationError,
    timestamp,
    to_json,
)
from plantbus.errors import ConfigError, EventError
from plantbus.state.dead_letters import DeadLetter

logger = logging.getLogger("plantbus.connectors.opcua")

_Queue = asyncio.Queue[tuple[NodeMapper, Notification]]


class OpcUaSource(Source):
    """Subscribe to data changes and events of OPC UA nodes, reconnecting on loss."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        mappers: list[NodeMapper],
        *,
        username: str | None = None,
        password: str | None = None,
        security: str | None = None,
        publishing_interval_ms: int = 500,
        timeout: float = 10.0,
        watchdog_interval: float = 1.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.mappers = mappers
        self.username = username
        self.password = password
        self.security = security
        self.publishing_interval_ms = publishing_interval_ms
        self.timeout = timeout
        # Seconds between the client's checks that the server still responds.
        self.watchdog_interval = watchdog_interval
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self._node_ids = {m: _node_id(m.config.node_id, name) for m in mappers}
        # Counts since start, for tests and the report.
        self.connections = 0
        self.rejected = 0

    @classmethod
    def from_config(cls, config: OpcUaSourceConfig) -> OpcUaSource:
        """Create the source of a hub file's `kind: opcua` section."""
        return cls(
            config.name,
            config.endpoint,
            [NodeMapper(config.name, node) for node in config.nodes],
            username=config.username,
            password=config.password,
            security=config.security,
            publishing_interval_ms=config.publishing_interval_ms,
            timeout=config.timeout_seconds,
            reconnect_initial=config.reconnect_initial_seconds,
            reconnect_max=config.reconnect_max_seconds,
        )

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Keep the subscriptions alive and ingest notifications until `stop` is set."""
        queue: _Queue = asyncio.Queue()
        consumer = asyncio.create_task(self._consume(queue, ingest, reject))
        logger.info("Subscribing to %s for source %r.", self.endpoint, self.name)
        delay = self.reconnect_initial
        try:
            while not stop.is_set():
                connected = await self._session(queue, stop)
                if stop.is_set():
                    break
                if connected:
                    delay = self.reconnect_initial
                logger.info(
                    "Reconnecting to %s for source %r in %.1fs.",
                    self.endpoint,
                    self.name,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), timeout=delay * random.uniform(0.8, 1.0)
                    )
                delay = min(delay * 2, self.reconnect_max)
            # Ingest what arrived before the stop.
            await queue.join()
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        logger.info("Stopped subscribing to %s for %r.", self.endpoint, self.name)

    async def _session(self, queue: _Queue, stop: asyncio.Event) -> bool:
        """Connect, subscribe and wait for stop or a lost connection.

        Returns whether the connection was made.
        """
        client = Client(
            self.endpoint,
            timeout=self.timeout,
            watchdog_intervall=self.watchdog_interval,
        )
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            logger.warning(
                "Lost the OPC UA server %s for source %r: %r",
                self.endpoint,
                self.name,
                exc,
            )
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            await self._connect(client)
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            logger.warning(
                "Failed to connect to the OPC UA server %s for source %r: %s",
                self.endpoint,
                self.name,
                exc or type(exc).__name__,
            )
            await _disconnect(client)
            return False

        try:
            await self._subscribe(client, queue)
            self.connections += 1
            logger.info(
                "Subscribed to %d nodes of %s for source %r.",
                len(self.mappers),
                self.endpoint,
                self.name,
            )
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            logger.warning(
                "Subscribing to %s for source %r failed: %s",
                self.endpoint,
                self.name,
                exc or type(exc).__name__,
            )
        finally:
            await _disconnect(client)
        return True

    async def _connect(self, client: Client) -> None:
        if self.username is not None:
            client.set_user(self.username)
        if self.password is not None:
            client.set_password(self.password)
        if self.security is not None:
            await client.set_security_string(self.security)
        await client.connect()

    async def _subscribe(self, client: Client, queue: _Queue) -> None:
        data_mappers = [m for m in self.mappers if m.config.subscribe == "data_change"]
        if data_mappers:
            by_node = {self._node_ids[m]: m for m in data_mappers}
            handler = _DataChangeHandler(queue, by_node)
            subscription = await client.create_subscription(
                self.publishing_interval_ms, handler
            )
            nodes = [client.get_node(self._node_ids[m]) for m in data_mappers]
            results = await subscription.subscribe_data_change(nodes)
            for mapper, result in zip(data_mappers, results, strict=True):
                _log_failed(result, mapper, self.endpoint)

        for mapper in self.mappers:
            if mapper.config.subscribe != "event":
                continue
            subscription = await client.create_subscription(
                self.publishing_interval_ms, _EventHandler(queue, mapper)
            )
            event_type: Any = ObjectIds.BaseEventType
            if mapper.config.ua_event_type is not None:
                event_type = client.get_node(
                    _node_id(mapper.config.ua_event_type, self.name)
                )
            await subscription.subscribe_events(
                client.get_node(self._node_ids[mapper]), event_type
            )

    async def _consume(self, queue: _Queue, ingest: Ingest, reject: Reject) -> None:
        while True:
            mapper, notification = await queue.get()
            try:
                await self._handle(mapper, notification, ingest, reject)
            # NOTE: a notification whose ingest fails for a reason outside its
            # data (the log cannot append) is logged and dropped, because the
            # server does not send it again.
            except Exception:
                logger.exception(
                    "Failed to ingest a notification of OPC UA node %r for source %r.",
                    mapper.config.node_id,
                    self.name,
                )
            finally:
                queue.task_done()

    async def _handle(
        self,
        mapper: NodeMapper,
        notification: Notification,
        ingest: Ingest,
        reject: Reject,
    ) -> None:
        try:
            events = mapper.map(notification)
            if events:
                await ingest(events)
        except (NotificationError, EventError) as exc:
            self.rejected += 1
            await reject(
                DeadLetter(
                    stage="ingest",
                    error=str(exc),
                    payload=notification.raw,
                    source=self.name,
                    content_type="application/opcua+uabinary",
                    details={
                        "node_id": mapper.config.node_id,
                        "value": repr(notification.value),
                        "at": notification.at,
                        "fields": notification.fields,
                    },
                )
            )
            logger.warning(
                "Rejected a notification of OPC UA node %r for source %r: %s",
                mapper.config.node_id,
                self.name,
                exc,
            )


class _DataChangeHandler:
    """Queue data change notifications with their value and source timestamp."""

    def __init__(self, queue: _Queue, mappers: dict[ua.NodeId, NodeMapper]) -> None:
        self.queue = queue
        self.mappers = mappers

    async def datachange_notification(
        self, node: Node, val: Any, data: DataChangeNotif
    ) -> None:
        mapper = self.mappers.get(node.nodeid)
        if mapper is None:
            return
        value = data.monitored_item.Value
        notification = Notification(
            node_id=mapper.config.node_id,
            value=to_json(val),
            at=timestamp(value.SourceTimestamp, value.ServerTimestamp),
            raw=struct_to_binary(value),
        )
        self.queue.put_nowait((mapper, notification))

    async def status_change_notification(
        self, status: ua.StatusChangeNotification
    ) -> None:
        logger.info("OPC UA subscription status changed: %s", status.Status)


class _EventHandler:
    """Queue the event notifications of one event node."""

    def __init__(self, queue: _Queue, mapper: NodeMapper) -> None:
        self.queue = queue
        self.mapper = mapper

    async def event_notification(self, event: Any) -> None:
        variants = event.get_event_props_as_fields_dict()
        fields = {name: to_json(variant.Value) for name, variant in variants.items()}
        moment = getattr(event, "Time", None)
        notification = Notification(
            node_id=self.mapper.config.node_id,
            value=fields.get("Message"),
            at=timestamp(moment),
            fields=fields,
            raw=struct_to_binary(
                ua.EventFieldList(EventFields=list(variants.values()))
            ),
        )
        self.queue.put_nowait((self.mapper, notification))

    async def status_change_notification(
        self, status: ua.StatusChangeNotification
    ) -> None:
        logger.info("OPC UA event subscription status changed: %s", status.Status)


def _node_id(text: str, source: str) -> ua.NodeId:
    try:
        return ua.NodeId.from_string(text)
    except (ValueError, UaError) as exc:
        raise ConfigError(
            f"OPC UA source {source!r}: node id {text!r} is invalid ({exc}). Write "
            f"it as ns=<index>;s=<name> or ns=<index>;i=<number>, such as "
            f"ns=2;s=Press4.Running."
        ) from exc


def _log_failed(result: Any, mapper: NodeMapper, endpoint: str) -> None:
    if isinstance(result, ua.StatusCode) and not result.is_good():
        logger.error(
            "OPC UA server %s rejected the subscription to node %r: %s. Check "
            "the node id.",
            endpoint,
            mapper.config.node_id,
            result.name,
        )


async def _disconnect(client: Client) -> None:
    """Close the client, ignoring errors and giving up after 2 s."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), timeout=2)
