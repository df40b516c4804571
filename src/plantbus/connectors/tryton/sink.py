"""Post shop-floor events to Tryton productions, idempotently.

Every posting carries the event id in the `plantbus_event` field that the
plantbus Tryton module adds (unique where set). The sink sends the event to
`production.plantbus_post`, which runs inside Tryton as one transaction: it
looks the posting up by event id and returns its reference when it exists,
and creates it otherwise. When two deliveries of one event race, the database
rejects the second insert with the unique constraint; the sink then asks
again and gets the reference of the first. One RPC call per event also keeps
the ERP's request rate, not the hub, as the limit of the throughput.

How the events map onto Tryton:

* started: the production is released as needed and set to running. Its
  planned input moves (the BOM explosion) are cancelled first, because the
  shop floor reports the real consumption with `material.consumed` events, and
  Tryton's `run` would otherwise consume the whole plan on top of them. The
  cancelled moves stay on the production as the record of the plan.
* material consumed: one done input move per event, from the plant's storage
  (or the event's location) into the production location, with its lot.
* progressed: one done `production.work.cycle` on the work of the operation,
  with its duration and the reported good and scrapped quantity.
* completed: the output move of the item gets the reported quantity and lot,
  works that never got a cycle are closed with a zero-length cycle, and the
  production is done. Scrap is an extra output move of the item into the
  plant's scrap location (a Tryton waste location): it shares the production
  cost and never counts as stock.
* goods produced: on a running production, the output move of the item is
  done with the event's quantity and lot, and the completion later keeps it.
  When the completion already posted the output, the event confirms it and
  returns the existing move.
* ASN received: one draft supplier shipment (`stock.shipment.in`) with an
  incoming move per line, for the supplier party and products found by code
  (see the module's `shipments.py`).
"""

from __future__ import annotations

import logging
from typing import Any

from plantbus.connectors.base import Sink
from plantbus.connectors.tryton.client import TrytonClient, TrytonError
from plantbus.connectors.tryton.lookup import TrytonLookup
from plantbus.errors import PermanentDeliveryError
from plantbus.events.envelope import Event

logger = logging.getLogger("plantbus.connectors.tryton")

# Part of the text of `msg_plantbus_event_unique` in the module's message.xml.
_DUPLICATE_EVENT_TEXT = "already carries this plantbus event id"

POSTED_TYPES = (
    "production.goods.produced.v1",
    "production.material.consumed.v1",
    "production.workorder.completed.v1",
    "production.workorder.progressed.v1",
    "production.workorder.started.v1",
    "supply.asn.received.v1",
)


def is_duplicate_event(error: TrytonError) -> bool:
    """Return True when Tryton rejected a posting because its event was posted."""
    return _DUPLICATE_EVENT_TEXT in error.message


def reference(model: str, record_id: int) -> str:
    """Return a Tryton record reference such as 'stock.move,42'."""
    return f"{model},{record_id}"


class TrytonSink(Sink):
    """Deliver production events to Tryton as moves, work cycles and state changes."""

    def __init__(
        self,
        name: str,
        client: TrytonClient,
        *,
        lookup: TrytonLookup | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.lookup = lookup or TrytonLookup(client)

    async def start(self) -> None:
        """Log the client in unless it is already; the client belongs to the caller."""
        await self.client.start()

    def describe(self) -> dict[str, Any]:
        """Return the sink's kind, target database and the event types it posts."""
        return {
            **super().describe(),
            "target": self.client.endpoint,
            "event_types": list(POSTED_TYPES),
        }

    async def deliver(self, event: Event) -> str | None:
        """Post one event to Tryton and return the reference of the posting."""
        if event.type not in POSTED_TYPES:
            raise PermanentDeliveryError(
                f"Event {event.id!r} has type {event.type!r}, which the Tryton sink "
                f"does not post; route only {', '.join(POSTED_TYPES)} to it."
            )
        try:
            result = await self._post(event)
        except TrytonError as exc:
            if not is_duplicate_event(exc):
                raise
            # A concurrent delivery of the same event won the race; asking
            # again finds its posting by the event id.
            logger.info(
                "Event %s was posted by a concurrent delivery; returning that posting",
                event.id,
                extra={"event_id": event.id, "correlation_id": event.correlationid},
            )
            result = await self._post(event)
        logger.debug(
            "Posted event %s (%s) to Tryton as %s",
            event.id,
            event.type,
            result,
            extra={"event_id": event.id, "correlation_id": event.correlationid},
        )
        return result

    async def _post(self, event: Event) -> str:
        references = await self.client.execute(
            "production", "plantbus_post", [event.to_dict()]
        )
        return str(references[0])
