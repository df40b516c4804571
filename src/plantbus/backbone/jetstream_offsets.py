"""Committed offsets that earlier plantbus versions kept in a key-value bucket.

Before consumer groups became durable consumers, each group's offsets were
one JSON object in the bucket `<stream>-offsets`, such as `{"0": 1204}` under
the key `g.<group>` (`x.<hex>` for other names). A group that has no durable
consumer for a partition yet starts there, so an upgrade resumes where the
old version stopped. Nothing writes to the bucket any more.
"""

from __future__ import annotations

import json
import re

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def group_key(group: str) -> str:
    """Return the bucket key of a consumer group; other names are hex-encoded."""
    if _SAFE_KEY.fullmatch(group):
        return f"g.{group}"
    return f"x.{group.encode('utf-8').hex()}"


async def open_bucket(js: JetStreamContext, name: str) -> KeyValue | None:
    """Return the bucket of an earlier version, or None where there is none."""
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        return None


async def load(bucket: KeyValue, group: str) -> dict[int, int]:
    """Return the offsets a group committed with an earlier version."""
    try:
        entry = await bucket.get(group_key(group))
    except KeyNotFoundError:
        return {}
    stored = json.loads(entry.value or b"{}")
    return {int(p): int(o) for p, o in stored.items()}
