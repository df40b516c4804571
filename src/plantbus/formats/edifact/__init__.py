"""UN/EDIFACT: read DESADV ship notices with pydifact, acknowledge with CONTRL.

`read_edifact` is pure: bytes in, an `EdiOutcome` out, or `EdiError` when
the data has no readable UNB header (then no report can be addressed).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo

from plantbus.formats.edifact.contrl import write_contrl
from plantbus.formats.edifact.desadv import MessageRejected, read_desadv
from plantbus.formats.edifact.reader import (
    VALUE_NOT_SUPPORTED,
    Message,
    Note,
    read_interchange,
)
from plantbus.formats.shipnotice import (
    EdiOutcome,
    EdiRejection,
    InterchangeIds,
    ship_notice_event,
)

__all__ = ["read_edifact"]

logger = logging.getLogger("plantbus.formats.edifact")

SHIP_NOTICE = "DESADV"


def read_edifact(
    data: bytes,
    name: str,
    *,
    source: str,
    plant: str | None = None,
    zone: tzinfo = UTC,
    now: datetime | None = None,
) -> EdiOutcome:
    """Read one EDIFACT interchange; return its ASN events, CONTRL and rejections.

    `zone` is the time zone of dates without one; `now` dates the report.
    """
    interchange = read_interchange(data, name)
    outcome = EdiOutcome([], None, "CONTRL")
    for note in interchange.notes:
        outcome.rejections.append(
            EdiRejection(f"interchange {interchange.reference!r}", note.describe())
        )

    if not interchange.notes:
        for message in interchange.messages:
            _read_message(interchange.sender, message, outcome, zone)
            for note in message.notes:
                outcome.rejections.append(
                    EdiRejection(
                        f"message {message.reference!r} ({message.message_type})",
                        note.describe(),
                    )
                )
        events = []
        for message in interchange.messages:
            if message.accepted and message.message_type == SHIP_NOTICE:
                notice = read_desadv(
                    message.segments,
                    default_supplier=interchange.sender,
                    zone=zone,
                )
                ids = InterchangeIds(
                    "edifact",
                    _party(interchange.header.elements[1]),
                    _party(interchange.header.elements[2]),
                    interchange.reference,
                    None,
                    message.reference,
                )
                events.append(
                    ship_notice_event(notice, ids, source=source, plant=plant)
                )
        outcome.events = events

    outcome.acknowledgement = write_contrl(interchange, now or datetime.now(UTC))
    logger.info(
        "Read EDIFACT interchange %s from %s (%s): %d ASN events, %d rejections.",
        interchange.reference,
        interchange.sender,
        name,
        len(outcome.events),
        len(outcome.rejections),
    )
    return outcome


def _read_message(
    sender: str, message: Message, outcome: EdiOutcome, zone: tzinfo
) -> None:
    """Check a message's content, adding a note to it when it is rejected."""
    if not message.accepted:
        return
    if message.message_type != SHIP_NOTICE:
        message.notes.append(
            Note("UNH", 1, VALUE_NOT_SUPPORTED,
                 f"message type {message.message_type!r} is not supported: this "
                 "hub reads only DESADV ship notices from EDIFACT",
                 2, 1, message.message_type)
        )  # fmt: skip
        return
    try:
        read_desadv(message.segments, default_supplier=sender, zone=zone)
    except MessageRejected as exc:
        message.notes.append(exc.note)


def _party(element: str | list[str]) -> str:
    """Return a party of UNB as 'id:qualifier', or the id alone."""
    if isinstance(element, str):
        return element
    return ":".join(part for part in element[:2] if part)
