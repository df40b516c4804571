"""Contract tests that every StateStore backend must pass.

A backend's test module imports these functions and defines two fixtures:

- `store`: a started, empty StateStore, closed after the test;
- `open_store`: an async factory that opens and starts another handle on the
  same storage as `store`, for tests that reopen the store or act from a second
  process's point of view.

Only the StateStore interface is used here, so the same functions run against
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from plantbus.state.dead_letters import Attempt, DeadLetter
from plantbus.state.store import (
    AuditRecord,
    DeadLetterFilter,
    Delivery,
    ReplayRequest,
    StateStore,
)

OpenStore = Callable[[], Awaitable[StateStore]]


def delivery(
    sink: str, event_id: str, ref: str | None = None, at: float = 0.0
) -> Delivery:
    return Delivery(
        sink=sink,
        event_id=event_id,
        target_ref=ref,
        delivered_at=at or time.time(),
        latency=0.25,
        event_type="production.workorder.completed.v1",
        pipeline="erp-postings",
    )


def letter(
    event_id: str | None = "ev-1",
    *,
    pipeline: str | None = "erp-postings",
    sink: str | None = "erp",
    error: str = "HTTP 422: quantity must be positive",
    event_type: str = "inventory.material.consumed.v1",
    created_at: float = 0.0,
) -> DeadLetter:
    return DeadLetter(
        stage="deliver:erp" if sink else "ingest",
        error=error,
        # Not valid UTF-8, so a store that decodes the payload fails here.
        payload=b"\x00\xff<order qty='1,5'/>\xfe",
        source="urn:plantbus:test:state",
        content_type="application/xml",
        headers={"x-file-name": "order-17.xml"},
        event_id=event_id,
        event_type=event_type,
        pipeline=pipeline,
        sink=sink,
        offset=42,
        attempts=[Attempt(1700000000.5, "timed out"), Attempt(1700000001.5, error)],
        created_at=created_at,
        details={"http_status": 422, "lot": "L-7"},
    )


# Idempotency ledger


async def test_delivered_no_ids_returns_empty(store: StateStore) -> None:
    assert await store.delivered("erp", []) == {}


async def test_record_deliveries_lookup_returns_target_refs(store: StateStore) -> None:
    await store.record_deliveries(
        [delivery("erp", "ev-1", "stock.move,7"), delivery("erp", "ev-2")]
    )

    found = await store.delivered("erp", ["ev-1", "ev-2", "ev-3"])

    assert found == {"ev-1": "stock.move,7", "ev-2": None}


async def test_delivered_other_sink_not_found(store: StateStore) -> None:
    await store.record_deliveries([delivery("erp", "ev-1", "ref")])

    assert await store.delivered("analytics", ["ev-1"]) == {}


async def test_record_deliveries_empty_batch_writes_nothing(store: StateStore) -> None:
    await store.record_deliveries([])

    assert await store.deliveries() == []


async def test_record_deliveries_repeat_stores_first(store: StateStore) -> None:
    await store.record_deliveries([delivery("erp", "ev-1", "first")])
    await store.record_deliveries(
        [delivery("erp", "ev-1", "second"), delivery("erp", "ev-2", "new")]
    )

    found = await store.delivered("erp", ["ev-1", "ev-2"])

    assert found == {"ev-1": "first", "ev-2": "new"}
    assert len(await store.deliveries()) == 2


async def test_record_deliveries_batch_duplicate_stores_first(
    store: StateStore,
) -> None:
    await store.record_deliveries(
        [delivery("erp", "ev-1", "first"), delivery("erp", "ev-1", "second")]
    )

    assert await store.delivered("erp", ["ev-1"]) == {"ev-1": "first"}


async def test_delivered_large_batch_finds_all(store: StateStore) -> None:
    ids = [f"ev-{i}" for i in range(2500)]
    await store.record_deliveries([delivery("erp", i, i.upper()) for i in ids])

    found = await store.delivered("erp", [*ids, "missing"])

    assert len(found) == 2500
    assert found["ev-2499"] == "EV-2499"
    assert "missing" not in found


async def test_deliveries_round_trip_every_field(store: StateStore) -> None:
    entry = Delivery("erp", "ev-1", "ref-1", 1700000000.25, 1.5, "a.b.c.v1", "pipe")
    await store.record_deliveries([entry])

    assert await store.deliveries() == [entry]


async def test_deliveries_filter_by_sink_oldest_first(store: StateStore) -> None:
    await store.record_deliveries(
        [
            delivery("erp", "ev-2", at=2000.0),
            delivery("erp", "ev-1", at=1000.0),
            delivery("analytics", "ev-1", at=1500.0),
        ]
    )

    erp = await store.deliveries(sink="erp")
    every = await store.deliveries()

    assert [d.event_id for d in erp] == ["ev-1", "ev-2"]
    assert [(d.sink, d.event_id) for d in every] == [
        ("erp", "ev-1"),
        ("analytics", "ev-1"),
        ("erp", "ev-2"),
    ]


async def test_forget_delivery_removes_one_entry(store: StateStore) -> None:
    await store.record_deliveries([delivery("erp", "ev-1"), delivery("erp", "ev-2")])

    await store.forget_delivery("erp", "ev-1")

    assert set(await store.delivered("erp", ["ev-1", "ev-2"])) == {"ev-2"}


async def test_forget_deliveries_counts_removed(store: StateStore) -> None:
    ids = [f"ev-{i}" for i in range(1200)]
    await store.record_deliveries([delivery("erp", i) for i in ids])
    await store.record_deliveries([delivery("analytics", "ev-1")])

    removed = await store.forget_deliveries("erp", [*ids[:1100], "never-delivered"])

    assert removed == 1100
    assert await store.forget_deliveries("erp", []) == 0
    assert len(await store.deliveries(sink="erp")) == 100
    assert await store.delivered("analytics", ["ev-1"]) == {"ev-1": None}


# Dead letters


async def test_add_dead_letter_round_trips_fields(store: StateStore) -> None:
    original = letter()

    letter_id = await store.add_dead_letter(original)
    [stored] = await store.dead_letters(DeadLetterFilter(ids=[letter_id]))

    assert original.id == letter_id
    assert stored.id == letter_id
    assert stored.payload == b"\x00\xff<order qty='1,5'/>\xfe"
    assert stored.stage == "deliver:erp"
    assert stored.error == original.error
    assert stored.source == original.source
    assert stored.content_type == "application/xml"
    assert stored.headers == {"x-file-name": "order-17.xml"}
    assert stored.event_id == "ev-1"
    assert stored.event_type == original.event_type
    assert stored.pipeline == "erp-postings"
    assert stored.sink == "erp"
    assert stored.offset == 42
    assert stored.attempts == original.attempts
    assert stored.created_at == original.created_at
    assert stored.details == {"http_status": 422, "lot": "L-7", "status": "open"}


async def test_add_dead_letter_sets_creation_time(store: StateStore) -> None:
    before = time.time()

    await store.add_dead_letter(letter())
    [stored] = await store.dead_letters(DeadLetterFilter())

    assert before <= stored.created_at <= time.time()


async def test_add_dead_letter_ingest_reject_without_event(store: StateStore) -> None:
    reject = letter(None, pipeline=None, sink=None)
    reject.offset = None
    reject.attempts = []

    await store.add_dead_letter(reject)
    [stored] = await store.dead_letters(DeadLetterFilter())

    assert stored.event_id is None
    assert stored.pipeline is None
    assert stored.offset is None
    assert stored.attempts == []
    assert stored.stage == "ingest"


async def test_add_dead_letter_ids_increase(store: StateStore) -> None:
    first = await store.add_dead_letter(letter("ev-1"))
    second = await store.add_dead_letter(letter("ev-2"))

    assert second > first


async def test_dead_letters_filter_by_each_field(store: StateStore) -> None:
    ids = {
        "a": await store.add_dead_letter(letter("ev-a", created_at=1000.0)),
        "b": await store.add_dead_letter(
            letter("ev-b", sink="analytics", created_at=2000.0)
        ),
        "c": await store.add_dead_letter(
            letter(
                "ev-c",
                pipeline="machine-stops",
                error="unknown item 'X-9'",
                event_type="production.machine.down.v1",
                created_at=3000.0,
            )
        ),
    }

    async def select(**fields: object) -> list[int | None]:
        found = await store.dead_letters(DeadLetterFilter(**fields))  # type: ignore[arg-type]
        return [found_letter.id for found_letter in found]

    assert await select() == [ids["a"], ids["b"], ids["c"]]
    assert await select(ids=[ids["c"], ids["a"]]) == [ids["a"], ids["c"]]
    assert await select(ids=[]) == []
    assert await select(event_type="production.machine.down.v1") == [ids["c"]]
    assert await select(event_id="ev-b") == [ids["b"]]
    assert await select(pipeline="machine-stops") == [ids["c"]]
    assert await select(sink="analytics") == [ids["b"]]
    assert await select(error_contains="'X-9'") == [ids["c"]]
    # Substring, not pattern: % and _ match only themselves.
    assert await select(error_contains="%") == []
    assert await select(since=2000.0) == [ids["b"], ids["c"]]
    assert await select(until=2000.0) == [ids["a"]]
    assert await select(since=1000.0, until=3000.0, sink="erp") == [ids["a"]]


async def test_dead_letters_status_filter_defaults_to_open(store: StateStore) -> None:
    open_id = await store.add_dead_letter(letter("ev-1"))
    discarded_id = await store.add_dead_letter(letter("ev-2"))
    await store.set_dead_letter_status(discarded_id, "discarded")

    open_letters = await store.dead_letters(DeadLetterFilter())
    every = await store.dead_letters(DeadLetterFilter(status=None))
    discarded = await store.dead_letters(DeadLetterFilter(status="discarded"))

    assert [x.id for x in open_letters] == [open_id]
    assert [x.id for x in every] == [open_id, discarded_id]
    assert [x.details["status"] for x in every] == ["open", "discarded"]
    assert [x.id for x in discarded] == [discarded_id]


async def test_dead_letters_limit_returns_oldest(store: StateStore) -> None:
    ids = [await store.add_dead_letter(letter(f"ev-{i}")) for i in range(5)]

    found = await store.dead_letters(DeadLetterFilter(), limit=2)

    assert [x.id for x in found] == ids[:2]


async def test_claim_dead_letter_succeeds_once(store: StateStore) -> None:
    letter_id = await store.add_dead_letter(letter())

    first = await store.claim_dead_letter(letter_id, "open", "redriving")
    second = await store.claim_dead_letter(letter_id, "open", "discarded")
    [stored] = await store.dead_letters(DeadLetterFilter(status=None))

    assert first is True
    assert second is False
    assert stored.details["status"] == "redriving"


async def test_claim_dead_letter_unknown_id_fails(store: StateStore) -> None:
    assert await store.claim_dead_letter(999_999, "open", "discarded") is False


async def test_claim_dead_letter_concurrent_one_wins(
    store: StateStore, open_store: OpenStore
) -> None:
    letter_id = await store.add_dead_letter(letter())
    other = await open_store()

    results = await asyncio.gather(
        *(
            handle.claim_dead_letter(letter_id, "open", status)
            for _ in range(10)
            for handle, status in ((store, "redriving"), (other, "discarded"))
        )
    )

    assert results.count(True) == 1


async def test_claim_dead_letter_invalid_status_raises(store: StateStore) -> None:
    letter_id = await store.add_dead_letter(letter())

    with pytest.raises(ValueError, match="'lost'"):
        await store.claim_dead_letter(letter_id, "open", "lost")


async def test_set_dead_letter_status_invalid_raises(store: StateStore) -> None:
    letter_id = await store.add_dead_letter(letter())

    with pytest.raises(ValueError, match=r"'done'.*expected one of"):
        await store.set_dead_letter_status(letter_id, "done")
    [stored] = await store.dead_letters(DeadLetterFilter())
    assert stored.details["status"] == "open"


async def test_pending_redrives_only_pipeline_redriving(store: StateStore) -> None:
    expected = await store.add_dead_letter(letter("ev-1"))
    other_pipeline = await store.add_dead_letter(letter("ev-2", pipeline="other"))
    still_open = await store.add_dead_letter(letter("ev-3"))
    later = await store.add_dead_letter(letter("ev-4"))
    for letter_id in (later, expected, other_pipeline):
        assert await store.claim_dead_letter(letter_id, "open", "redriving")

    pending = await store.pending_redrives("erp-postings")

    assert [x.id for x in pending] == [expected, later]
    assert still_open not in [x.id for x in pending]


async def test_finish_redrive_stores_outcome(store: StateStore) -> None:
    letter_id = await store.add_dead_letter(letter())
    await store.claim_dead_letter(letter_id, "open", "redriving")

    await store.finish_redrive(letter_id, "sent through the pipeline")
    [stored] = await store.dead_letters(DeadLetterFilter(status="redriven"))

    assert stored.id == letter_id
    assert stored.details["redrive_outcome"] == "sent through the pipeline"
    assert stored.details["redriven_at"] == pytest.approx(time.time(), abs=60)
    assert stored.details["lot"] == "L-7"
    assert await store.pending_redrives("erp-postings") == []


# Parked partition keys


async def test_park_key_moves_behind_newer_letter(store: StateStore) -> None:
    first = await store.add_dead_letter(letter("ev-1"))
    second = await store.add_dead_letter(letter("ev-2"))

    await store.park_key("erp-postings", "WO-1", first)
    await store.park_key("erp-postings", "WO-2", first)
    await store.park_key("erp-postings", "WO-1", second)

    assert await store.parked_keys("erp-postings") == {"WO-1": second, "WO-2": first}
    assert await store.parked_keys("machine-stops") == {}


async def test_unpark_key_removes_only_that_key(store: StateStore) -> None:
    blocker = await store.add_dead_letter(letter())
    await store.park_key("erp-postings", "WO-1", blocker)
    await store.park_key("erp-postings", "WO-2", blocker)
    await store.park_key("machine-stops", "WO-1", blocker)

    await store.unpark_key("erp-postings", "WO-1")
    await store.unpark_key("erp-postings", "never-parked")

    assert await store.parked_keys("erp-postings") == {"WO-2": blocker}
    assert await store.parked_keys("machine-stops") == {"WO-1": blocker}


async def test_add_parked_event_has_status_parked(store: StateStore) -> None:
    parked_id = await store.add_parked_event(letter("ev-9"))

    parked = await store.dead_letters(DeadLetterFilter(status="parked"))
    open_letters = await store.dead_letters(DeadLetterFilter())

    assert [x.id for x in parked] == [parked_id]
    assert parked[0].details["status"] == "parked"
    assert open_letters == []
    assert await store.claim_dead_letter(parked_id, "parked", "redriving")


# Replay requests


async def test_request_replay_pending_until_finished(store: StateStore) -> None:
    by_offset = await store.request_replay(
        ReplayRequest("erp-postings", from_offset=17, requested_at=1000.0)
    )
    by_time = await store.request_replay(
        ReplayRequest("erp-postings", from_time=1700000000.5, force=True)
    )
    await store.request_replay(ReplayRequest("machine-stops", from_offset=1))

    pending = await store.pending_replays("erp-postings")
    await store.finish_replay(by_offset, {0: 16, 1: 12})
    remaining = await store.pending_replays("erp-postings")

    assert by_time > by_offset
    assert pending[0] == ReplayRequest(
        "erp-postings", 17, None, False, 1000.0, by_offset
    )
    assert pending[1].from_time == 1700000000.5
    assert pending[1].force is True
    assert pending[1].requested_at == pytest.approx(time.time(), abs=60)
    assert [r.id for r in remaining] == [by_time]
    assert [r.pipeline for r in await store.pending_replays("machine-stops")] == [
        "machine-stops"
    ]


# Audit log


async def test_audit_log_returns_records_in_order(store: StateStore) -> None:
    records = [
        AuditRecord(1000.0 + i, "ops", "dlq.redrive", f"dead letter {i}", {"n": i})
        for i in range(3)
    ]
    for record in records:
        await store.add_audit(record)

    assert await store.audit_log() == records
    assert await store.audit_log(limit=2) == records[1:]


async def test_audit_log_empty(store: StateStore) -> None:
    assert await store.audit_log() == []


# Durability and sharing


async def test_reopened_store_retains_state(
    store: StateStore, open_store: OpenStore
) -> None:
    await store.record_deliveries([delivery("erp", "ev-1", "ref")])
    letter_id = await store.add_dead_letter(letter())
    await store.add_audit(AuditRecord(1.0, "ops", "replay", "erp-postings"))
    await store.request_replay(ReplayRequest("erp-postings", from_offset=1))
    await store.close()

    reopened = await open_store()

    assert await reopened.delivered("erp", ["ev-1"]) == {"ev-1": "ref"}
    assert [x.id for x in await reopened.dead_letters(DeadLetterFilter())] == [
        letter_id
    ]
    assert len(await reopened.audit_log()) == 1
    assert len(await reopened.pending_replays("erp-postings")) == 1


async def test_second_handle_reads_writes(
    store: StateStore, open_store: OpenStore
) -> None:
    other = await open_store()

    await other.record_deliveries([delivery("erp", "ev-1", "ref")])
    letter_id = await other.add_dead_letter(letter())

    assert await store.delivered("erp", ["ev-1"]) == {"ev-1": "ref"}
    assert await store.claim_dead_letter(letter_id, "open", "discarded")
