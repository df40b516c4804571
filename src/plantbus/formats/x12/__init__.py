"""ANSI X12: read 856 ship notices, check envelopes, acknowledge with TA1 and 997.

`read_x12` is pure: bytes in, an `EdiOutcome` out, or `EdiError` when the
data has no readable ISA segment, so that no acknowledgement can be addressed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo

from plantbus.formats.shipnotice import (
    EdiOutcome,
    EdiRejection,
    InterchangeIds,
    is_ascii_digits,
    ship_notice_event,
)
from plantbus.formats.x12.ack import acknowledge
from plantbus.formats.x12.asn import SetRejected, read_ship_notice
from plantbus.formats.x12.envelope import (
    AK5_NOT_SUPPORTED,
    AK5_SEGMENTS_IN_ERROR,
    FunctionalGroup,
    Interchange,
    TransactionSet,
    read_interchange,
)
from plantbus.formats.x12.segments import decode, read_delimiters, split_segments

__all__ = ["read_x12"]

logger = logging.getLogger("plantbus.formats.x12")

SHIP_NOTICE = "856"


def read_x12(
    data: bytes,
    name: str,
    *,
    source: str,
    plant: str | None = None,
    zone: tzinfo = UTC,
    now: datetime | None = None,
) -> EdiOutcome:
    """Read one X12 interchange into ASN events, an acknowledgement and rejections.

    `zone` is the time zone of dates that carry no DTM04 time code; `now`
    dates the acknowledgement.
    """
    text = decode(data, name)
    delimiters = read_delimiters(text, name)
    interchange = read_interchange(split_segments(text, delimiters), delimiters)
    outcome = EdiOutcome([], None, "997")

    if interchange.ta1_code is not None:
        outcome.acknowledgement_kind = "TA1"
        outcome.rejections.append(
            EdiRejection(
                f"interchange {interchange.control!r} (TA1 code "
                f"{interchange.ta1_code})",
                interchange.reason or "",
            )
        )
    else:
        for group in interchange.groups:
            _read_group(interchange, group, outcome, source, plant, zone)

    outcome.acknowledgement = acknowledge(interchange, now or datetime.now(UTC))
    logger.info(
        "Read X12 interchange %s from %s (%s): %d ASN events, %d rejections.",
        interchange.control,
        interchange.sender,
        name,
        len(outcome.events),
        len(outcome.rejections),
    )
    return outcome


def _read_group(
    interchange: Interchange,
    group: FunctionalGroup,
    outcome: EdiOutcome,
    source: str,
    plant: str | None,
    zone: tzinfo,
) -> None:
    events = []
    for tx in group.sets:
        if tx.accepted and tx.set_id == SHIP_NOTICE:
            try:
                notice = read_ship_notice(
                    tx.segments, default_supplier=group.sender.strip(), zone=zone
                )
            except SetRejected as exc:
                tx.codes.append(AK5_SEGMENTS_IN_ERROR)
                tx.notes.append(exc.note)
                tx.reasons.append(exc.note.describe())
            else:
                ids = InterchangeIds(
                    "x12",
                    interchange.sender,
                    interchange.receiver,
                    interchange.control,
                    group.control,
                    tx.control,
                )
                events.append(
                    ship_notice_event(notice, ids, source=source, plant=plant)
                )
        elif tx.set_id != SHIP_NOTICE and is_ascii_digits(tx.set_id):
            _not_supported(tx)
        for reason in tx.reasons:
            outcome.rejections.append(
                EdiRejection(
                    f"group {group.control!r} transaction set {tx.set_id!r} "
                    f"{tx.control!r} (AK5 codes {', '.join(tx.codes)})",
                    reason,
                )
            )
    for reason in group.reasons:
        outcome.rejections.append(
            EdiRejection(
                f"group {group.control!r} (AK9 codes {', '.join(group.codes)})", reason
            )
        )
    # A rejected group is sent again as a whole, so none of its events count.
    if not group.codes:
        outcome.events.extend(events)


def _not_supported(tx: TransactionSet) -> None:
    tx.codes.insert(0, AK5_NOT_SUPPORTED)
    tx.reasons.insert(
        0,
        f"ST01 is {tx.set_id!r}: this hub reads only 856 ship notices from X12; "
        "send other transaction sets to the system that handles them",
    )
