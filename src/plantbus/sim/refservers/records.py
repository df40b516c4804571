"""Records of one kind on a reference server, with idempotency keys and paging."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


class KeyReused(Exception):
    """An idempotency key came back with a different request body."""


class Duplicate(Exception):
    """A record with the same business key exists; `record` is that record."""

    def __init__(self, record: dict[str, Any], business_key: str) -> None:
        super().__init__(business_key)
        self.record = record
        self.business_key = business_key


@dataclass
class Collection:
    """Records of one kind in creation order, like one table of the real system."""

    name: str
    id_prefix: str
    # Initial status of a new record.
    status: str = "open"
    # Returns the business key that must be unique, such as an ASN number.
    business_key: Callable[[dict[str, Any]], str | None] | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Idempotency key -> (fingerprint of the request body, record id).
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    _by_business_key: dict[str, str] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def create(
        self, payload: dict[str, Any], idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Store a record and return it with whether it is new.

        Raises KeyReused when the key came with another body and Duplicate
        when the business key exists. The check and the insert run without an
        await in between, so concurrent requests with one key cannot both
        create a record.
        """
        fingerprint = _fingerprint(payload)
        if idempotency_key is not None and idempotency_key in self.keys:
            known_fingerprint, record_id = self.keys[idempotency_key]
            if known_fingerprint != fingerprint:
                raise KeyReused(idempotency_key)
            return self.records[record_id], False

        business_key = self.business_key(payload) if self.business_key else None
        if business_key is not None and business_key in self._by_business_key:
            raise Duplicate(
                self.records[self._by_business_key[business_key]], business_key
            )

        record_id = f"{self.id_prefix}-{next(self._numbers):06d}"
        record = {
            "id": record_id,
            "status": self.status,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            **payload,
        }
        self.records[record_id] = record
        if idempotency_key is not None:
            self.keys[idempotency_key] = (fingerprint, record_id)
        if business_key is not None:
            self._by_business_key[business_key] = record_id
        return record, True

    def page(
        self, offset: int, limit: int, filters: dict[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of records that match every filter, and the match count."""
        matches = [
            record
            for record in self.records.values()
            if all(record.get(name) == value for name, value in (filters or {}).items())
        ]
        return matches[offset : offset + limit], len(matches)

    def clear(self) -> None:
        """Delete every record and idempotency key."""
        self.records.clear()
        self.keys.clear()
        self._by_business_key.clear()
        self._numbers = itertools.count(1)


def asn_key(payload: dict[str, Any]) -> str:
    """Return the business key of an ASN: the supplier id and the ASN number."""
    return f"{payload['supplier_id']}/{payload['asn_number']}"


def _fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(
        orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
