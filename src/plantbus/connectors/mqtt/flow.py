"""An aiomqtt client that stops reading its socket while too many messages wait.

A broker may send a subscriber at most Receive Maximum (MQTT 5) or its
in-flight limit (3.1.1) of unacknowledged QoS 1 and 2 messages. Mosquitto
2.0.11 keeps that limit until the client acknowledges, and then releases up
to a whole window of queued messages for each acknowledgement: acking 10 of
100 messages in flight brought 1,000 more (tests/connectors/mqtt/
test_flow.py). The MQTT source acknowledges a batch only once it is in the
log, but each batch then lets thousands more into aiomqtt's queue, which has
no bound, so a burst waited in the hub's memory.

This client enforces the window itself. When `max_queued` messages wait in
its queue, it takes the socket out of the event loop's readers, so the
broker's further messages wait in the kernel's socket buffers and then in the
broker's own queue for this session. Once the source has taken the queue
down to half of `max_queued`, reading starts again.

Pausing starts only when the caller turns it on with `start_flow_control`,
after its subscriptions are confirmed: a resumed session's backlog arrives
before the SUBACK, and a paused socket would never deliver that SUBACK. A
pause also ends after `max_pause_seconds` (half the keepalive) whatever the
queue holds, because a paused socket does not read the broker's PINGRESP
either and paho would drop the connection. The queue then takes what the
broker had sent by that time, which can be more than `max_queued`. A caller
that is stuck, for example on a full disk, acknowledges nothing meanwhile,
and without acknowledgements the broker sends no more.
For QoS 2, paho reads one packet per message awaiting its PUBREL in one
call, so the queue can pass `max_queued` by up to that many messages.

NOTE: this replaces aiomqtt 2.5.1's socket reader while reading is paused.
It uses the client's private attributes `_client`, `_queue`, `_loop` and
`_disconnected`, so check them when the aiomqtt pin changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt

logger = logging.getLogger("plantbus.connectors.mqtt")


class PausingClient(aiomqtt.Client):
    """An aiomqtt client with at most about `max_queued` messages in its queue."""

    def __init__(self, *, max_queued: int, **options: Any) -> None:
        if max_queued < 2:
            raise ValueError(
                f"`max_queued` is {max_queued!r}: reading pauses at this many "
                "messages and resumes at half of it, so it must be at least 2."
            )
        super().__init__(**options)
        self.max_queued = max_queued
        self.max_pause_seconds = max(1.0, float(options.get("keepalive", 60)) / 2)
        self.flow_control = False
        self.paused = False
        # Number of times reading paused, for tests and logs.
        self.pauses = 0
        self._fileno: int | None = None
        self._pause_timer: asyncio.TimerHandle | None = None

    def start_flow_control(self) -> None:
        """Let reading pause from now on; call once the subscriptions are confirmed."""
        self.flow_control = True

    def resume_reading(self) -> None:
        """Read the socket again if reading paused and the queue is short enough."""
        if not self.paused or self._queue.qsize() > self.max_queued // 2:
            return
        self._resume()

    def _resume(self) -> None:
        self.paused = False
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        if self._fileno is None:
            return
        self._loop.add_reader(self._fileno, self._read_socket)
        # A TLS socket may hold decrypted bytes that no longer make the file
        # descriptor readable, so read once without waiting for it.
        self._loop.call_soon(self._read_socket)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        super()._on_message(client, userdata, message)
        if (
            self.flow_control
            and not self.paused
            and self._fileno is not None
            and self._queue.qsize() >= self.max_queued
        ):
            self._loop.remove_reader(self._fileno)
            self.paused = True
            self.pauses += 1
            self._pause_timer = self._loop.call_later(
                self.max_pause_seconds, self._end_long_pause
            )

    def _end_long_pause(self) -> None:
        self._pause_timer = None
        if self.paused:
            logger.info(
                "MQTT client %s reads again after a %.0f s pause with %d messages "
                "waiting, to keep its connection alive",
                self._client._client_id.decode(errors="replace"),
                self.max_pause_seconds,
                self._queue.qsize(),
            )
            self._resume()

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        super()._on_socket_open(client, userdata, sock)
        self._fileno = sock.fileno()
        self.paused = False

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        super()._on_socket_close(client, userdata, sock)
        self._fileno = None
        self.paused = False
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    def _read_socket(self) -> None:
        paho = self._client
        try:
            while not self.paused:
                paho.loop_read()
                # An SSL socket can hold more decoded bytes than one read takes.
                pending = getattr(paho._sock, "pending", None)
                if pending is None or pending() == 0:
                    break
        except Exception as exc:
            # A failed read means a broken connection; the source reconnects.
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
