"""Redrive and replay carried out by a real pipeline over real SQLite files."""

from __future__ import annotations

from plantbus.admin import AdminService
from plantbus.config import HubConfig
from plantbus.connectors.memory import MemorySink
from plantbus.state.store import DeadLetterFilter

from .conftest import PIPELINE, ClosedOnceSink, make_runtime, progressed, run_until


async def _letters(state, status: str | None = None):
    return await state.dead_letters(DeadLetterFilter(status=status))


async def test_redrive_delivers_once_while_running(stores, config: HubConfig) -> None:
    log, state = stores
    event = progressed("WO1", 1)
    await log.append([event])
    sink = ClosedOnceSink()
    admin = AdminService(state, config)
    runtime = make_runtime(log, state, sink)
    redrive_result = None

    async def redriven() -> bool:
        nonlocal redrive_result
        letters = await _letters(state, None)
        if letters and redrive_result is None:
            redrive_result = await admin.redrive(
                DeadLetterFilter(ids=[letters[0].id]), actor="tester"
            )
        return bool(letters) and letters[0].details["status"] == "redriven"

    await run_until(runtime, redriven)

    assert redrive_result is not None
    assert redrive_result.done == [1]
    assert [e.id for e in sink.delivered] == [event.id]
    assert await state.delivered("erp", [event.id]) == {event.id: f"erp:{event.id}"}
    (letter,) = await _letters(state)  # no open letter is left
    assert letter.details["status"] == "redriven"
    assert letter.details["redrive_outcome"] == "sent through the pipeline"


async def test_redrive_waits_for_next_start_when_stopped(
    stores, config: HubConfig
) -> None:
    log, state = stores
    event = progressed("WO1", 1)
    await log.append([event])
    sink = ClosedOnceSink()

    async def dead_lettered() -> bool:
        return len(await _letters(state)) == 1

    await run_until(make_runtime(log, state, sink), dead_lettered)
    result = await AdminService(state, config).redrive(
        DeadLetterFilter(event_type="production.workorder.progressed.v1"),
        actor="tester",
    )
    assert result.done == [1]
    assert (await _letters(state, "redriving"))[0].id == 1

    async def redriven() -> bool:
        return len(await _letters(state, "redriven")) == 1

    await run_until(make_runtime(log, state, sink), redriven)
    # A third start finds nothing to redrive and nothing new in the log.
    await run_until(make_runtime(log, state, sink), redriven)

    assert [e.id for e in sink.delivered] == [event.id]
    assert sink.attempts[event.id] == 2


async def test_redrive_failing_again_opens_new_dead_letter(
    stores, config: HubConfig
) -> None:
    log, state = stores
    await log.append([progressed("WO1", 1)])
    sink = ClosedOnceSink(failures=2)

    async def dead_lettered() -> bool:
        return len(await _letters(state)) == 1

    await run_until(make_runtime(log, state, sink), dead_lettered)
    await AdminService(state, config).redrive(DeadLetterFilter(ids=[1]), actor="t")

    async def failed_again() -> bool:
        return len(await _letters(state, "redriven")) == 1

    await run_until(make_runtime(log, state, sink), failed_again)

    (old,) = await _letters(state, "redriven")
    (new,) = await _letters(state, "open")
    assert old.details["redrive_outcome"] == f"failed again: see dead letter {new.id}"
    assert new.id == 2
    assert new.sink == "erp"
    assert sink.delivered == []


async def test_redrive_skips_event_already_in_ledger(stores, config: HubConfig) -> None:
    log, state = stores
    event = progressed("WO1", 1)
    await log.append([event])
    sink = ClosedOnceSink()

    async def dead_lettered() -> bool:
        return len(await _letters(state)) == 1

    await run_until(make_runtime(log, state, sink), dead_lettered)
    # A forced replay delivered the event meanwhile; with key parking on, the
    # replayed event would wait behind its own dead letter instead.
    await AdminService(state, config).replay(
        PIPELINE, from_offset=1, force=True, actor="t"
    )

    async def delivered() -> bool:
        return len(sink.delivered) == 1

    await run_until(make_runtime(log, state, sink, park_keys=False), delivered)
    await AdminService(state, config).redrive(DeadLetterFilter(ids=[1]), actor="t")

    async def redriven() -> bool:
        return len(await _letters(state, "redriven")) == 1

    await run_until(make_runtime(log, state, sink), redriven)

    (letter,) = await _letters(state, "redriven")
    assert letter.details["redrive_outcome"] == (
        "not sent: the ledger already lists it at 'erp'"
    )
    assert len(sink.delivered) == 1


async def _deliver_all(log, state, count: int) -> None:
    sink = MemorySink("erp")

    async def done() -> bool:
        return len(sink.events) == count

    await run_until(make_runtime(log, state, sink), done)


async def _replayed(log, state, force: bool, config: HubConfig) -> MemorySink:
    await AdminService(state, config).replay(
        PIPELINE, from_offset=1, force=force, actor="tester"
    )
    sink = MemorySink("erp")

    async def applied() -> bool:
        pending = await state.pending_replays(PIPELINE)
        return not pending and await log.lag(PIPELINE) == 0

    await run_until(make_runtime(log, state, sink), applied)
    return sink


async def test_replay_without_force_redelivers_nothing(
    stores, config: HubConfig
) -> None:
    log, state = stores
    await log.append([progressed("WO1", n) for n in range(5)])
    await _deliver_all(log, state, 5)

    sink = await _replayed(log, state, False, config)

    assert sink.events == []
    assert await log.committed(PIPELINE) != {}


async def test_replay_with_force_redelivers_everything(
    stores, config: HubConfig
) -> None:
    log, state = stores
    events = [progressed(f"WO{n}", n) for n in range(5)]
    await log.append(events)
    await _deliver_all(log, state, 5)

    sink = await _replayed(log, state, True, config)

    assert sorted(e.id for e in sink.events) == sorted(e.id for e in events)
    (audit,) = await state.audit_log()
    assert audit.action == "pipeline.replay"
    assert audit.actor == "tester"
    assert audit.details["force"] is True


async def test_replay_applies_while_running(stores, config: HubConfig) -> None:
    log, state = stores
    events = [progressed("WO1", n) for n in range(5)]
    await log.append(events)
    # Unlike MemorySink, this sink keeps a repeated event twice.
    sink = ClosedOnceSink(failures=0)
    admin = AdminService(state, config)
    requested = False

    async def delivered_twice() -> bool:
        nonlocal requested
        if len(sink.delivered) == 5 and not requested:
            await admin.replay(PIPELINE, from_offset=3, force=True, actor="t")
            requested = True
        return len(sink.delivered) == 8

    await run_until(make_runtime(log, state, sink), delivered_twice)

    offsets = [e.data["duration_seconds"] for e in sink.delivered]
    assert offsets == ["0", "1", "2", "3", "4", "2", "3", "4"]
