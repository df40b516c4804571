"""Evaluations per second of a seven-field JSONata mapping, four ways.

Run: .venv/bin/python bench/bench_mapping.py [--rounds 5] [--seconds 1.0]

One run measures the same mapping of work order completed events through:

- jsonata: jsonata-python's `Jsonata(expr).evaluate(event)`, parsed once;
- fast path: `compile_expression(expr).evaluate(event)`, the compiled closures;
- Mapping.apply: the same expression through the `Mapping` class that a map
  step uses, which adds the check that the result is an object;
- hand-written: a Python function with the same dict lookups.

Each of `--rounds` rounds runs every variant in turn, each for about
`--seconds`, over `--events` distinct events (1,000 by default). The table and
bench/results/mapping.json show the median rate of each variant. All variants
are first checked to return the same objects.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jsonata  # type: ignore[import-untyped]
from common import write_result

from plantbus.events.envelope import Event
from plantbus.pipeline.mapping import Mapping, compile_expression

EXPRESSION = (
    '{"order": data.work_order_id, "item": data.item, "qty": data.quantity.value, '
    '"uom": data.quantity.unit, "lot": data.lot, "ref": "plantbus:" & id, '
    '"plant": plant}'
)


def make_events(count: int) -> list[dict[str, Any]]:
    """Build work order completed events as CloudEvents JSON dicts."""
    return [
        Event.create(
            "production.workorder.completed.v1",
            "urn:plantbus:plant:p1:mes",
            {
                "work_order_id": f"WO-{number:06d}",
                "item": f"BRK-{number % 40:03d}",
                "quantity": {"value": f"{number % 97}.5", "unit": "u"},
                "completed_at": "2026-03-01T06:00:00Z",
                "lot": f"LOT-{number // 10:05d}",
            },
            plant="P1",
            partitionkey=f"WO-{number:06d}",
        ).to_dict()
        for number in range(count)
    ]


def hand_written(event: dict[str, Any]) -> dict[str, Any]:
    """Map one event with plain dict lookups, as a Python plug-in step would."""
    data = event["data"]
    quantity = data["quantity"]
    return {
        "order": data["work_order_id"],
        "item": data["item"],
        "qty": quantity["value"],
        "uom": quantity["unit"],
        "lot": data["lot"],
        "ref": "plantbus:" + event["id"],
        "plant": event["plant"],
    }


def measure(
    variants: dict[str, Callable[[dict[str, Any]], Any]],
    events: list[dict[str, Any]],
    rounds: int,
    seconds: float,
) -> dict[str, float]:
    """Return each variant's median evaluations per second over timed rounds."""
    # Size each variant's passes from one untimed pass so that its part of a
    # round lasts about `seconds`.
    passes: dict[str, int] = {}
    for name, mapper in variants.items():
        started = time.perf_counter()
        for event in events:
            mapper(event)
        passes[name] = max(1, round(seconds / (time.perf_counter() - started)))

    # Every round runs every variant in turn, so that other load on the
    # machine affects all of them alike and the ratios stay comparable.
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, mapper in variants.items():
            started = time.perf_counter()
            for _ in range(passes[name]):
                for event in events:
                    mapper(event)
            elapsed = time.perf_counter() - started
            rates[name].append(passes[name] * len(events) / elapsed)
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds, each running every variant"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="approximate seconds that each variant runs per round",
    )
    parser.add_argument("--events", type=int, default=1000, help="distinct events")
    options = parser.parse_args()

    events = make_events(options.events)
    interpreter = jsonata.Jsonata(EXPRESSION)
    expression = compile_expression(EXPRESSION)
    mapping = Mapping(EXPRESSION)
    if not expression.fast_path:
        raise SystemExit(
            f"The expression runs on the interpreter: {expression.fallback_reason}"
        )
    variants: dict[str, Callable[[dict[str, Any]], Any]] = {
        "jsonata": interpreter.evaluate,
        "fast_path": expression.evaluate,
        "mapping_apply": mapping.apply,
        "hand_written": hand_written,
    }
    for event in events:
        expected = hand_written(event)
        for name, mapper in variants.items():
            if mapper(event) != expected:
                raise SystemExit(f"{name} returned {mapper(event)!r}, not {expected!r}")

    load_before = os.getloadavg()[0]
    rates = measure(variants, events, options.rounds, options.seconds)
    if expression.fallback_count:
        raise SystemExit(f"{expression.fallback_count} evaluations fell back")

    results = {
        **{f"{name}_per_second": round(rate) for name, rate in rates.items()},
        "fast_path_over_jsonata": round(rates["fast_path"] / rates["jsonata"], 1),
        "hand_written_over_fast_path": round(
            rates["hand_written"] / rates["fast_path"], 2
        ),
    }
    path = write_result(
        "mapping",
        {
            "options": vars(options),
            # Other work on the machine lowers every rate, so record the load.
            "load_average_1m_before": load_before,
            "load_average_1m_after": os.getloadavg()[0],
            "expression": EXPRESSION,
            "jsonata_python": version("jsonata-python"),
            "results": results,
        },
    )

    print(f"{'variant':<16}{'evaluations/s':>16}")
    for name, rate in rates.items():
        print(f"{name:<16}{rate:>16,.0f}")
    print(f"fast path / jsonata-python: {results['fast_path_over_jsonata']}x")
    print(f"hand-written / fast path:   {results['hand_written_over_fast_path']}x")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
