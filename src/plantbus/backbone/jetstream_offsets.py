"""Committed offsets of consumer groups in a JetStream key-value bucket.

Each consumer group has one key whose value is a JSON object that maps
partition numbers to committed offsets. Every change is a compare-and-set on
the key's revision, so two processes that commit for the same group at the
same time both keep their partitions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from plantbus.errors import BackboneError

_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Compare-and-set attempts of one change before it gives up.
_ATTEMPTS = 50


def group_key(group: str) -> str:
    """Return the bucket key of a consumer group; other names are hex-encoded."""
    if _SAFE_KEY.fullmatch(group):
        return f"g.{group}"
    return f"x.{group.encode('utf-8').hex()}"


class OffsetStore:
    """Load and change the committed offsets of consumer groups."""

    def __init__(self, bucket: KeyValue, name: str) -> None:
        self._bucket = bucket
        self.name = name

    @classmethod
    async def open(cls, js: JetStreamContext, name: str, replicas: int) -> OffsetStore:
        """Open the bucket, creating it with `replicas` copies on first use."""
        try:
            bucket = await js.key_value(name)
        except BucketNotFoundError:
            bucket = await js.create_key_value(
                bucket=name, history=1, replicas=replicas, direct=True
            )
        return cls(bucket, name)

    async def load(self, group: str) -> tuple[dict[int, int], int | None]:
        """Return a group's stored offsets and the key revision, None if no key."""
        try:
            entry = await self._bucket.get(group_key(group))
        except KeyNotFoundError:
            return {}, None
        stored = json.loads(entry.value or b"{}")
        return {int(p): int(o) for p, o in stored.items()}, entry.revision

    async def merge(self, group: str, offsets: Mapping[int, int]) -> None:
        """Set the offsets of some partitions and keep those of the others."""
        await self._change(group, lambda stored: {**stored, **offsets})

    async def replace(self, group: str, offsets: Mapping[int, int]) -> None:
        """Set the offsets of every partition of a group."""
        await self._change(group, lambda _: offsets)

    async def _change(
        self,
        group: str,
        update: Callable[[dict[int, int]], Mapping[int, int]],
    ) -> None:
        for _ in range(_ATTEMPTS):
            stored, revision = await self.load(group)
            if await self._store(group, update(stored), revision):
                return
        raise self._contended(group)

    async def _store(
        self, group: str, offsets: Mapping[int, int], revision: int | None
    ) -> bool:
        value = json.dumps({str(p): o for p, o in sorted(offsets.items())}).encode()
        key = group_key(group)
        try:
            if revision is None:
                await self._bucket.create(key, value)
            else:
                await self._bucket.update(key, value, last=revision)
        except KeyWrongLastSequenceError:
            return False
        except BadRequestError as exc:
            # 10071: wrong last sequence, as reported by create on a taken key.
            if exc.err_code != 10071:
                raise
            return False
        return True

    def _contended(self, group: str) -> BackboneError:
        return BackboneError(
            f"Changing the offsets of consumer group {group!r} in bucket "
            f"{self.name!r} lost {_ATTEMPTS} compare-and-set races in a row. "
            "Another process commits for the same group without pause; give each "
            "partition of a group to one process at a time."
        )
