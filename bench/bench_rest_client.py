"""Events per second that the REST sink delivers, with aiohttp and with httpx.

Run: .venv/bin/python bench/bench_rest_client.py [--events 5000] [--rounds 5]

The benchmark starts a small aiohttp web server in a child process on a free
loopback port. The server responds to every POST with 201 and a JSON body that
carries an id. The client process sends one POST per event, with at most
`--concurrency` deliveries in flight over a pool of `--connections`
connections, in three ways:

- sink (aiohttp): `RestSink.deliver`, with its JSONata body mapping, bearer
  token, Idempotency-Key header and response handling;
- sink (httpx): the same sink class with its one HTTP call (`_send`) done by
  `httpx.AsyncClient` and the same pool size, so the two differ only in the
  HTTP client;
- sink (httpx, sniffio stubbed): as sink (httpx), with `sys.modules["sniffio"]`
  set to None during the run. httpcore 1.0.9 imports sniffio each time it
  sets up a lock, and sniffio is not installed here (anyio 4.16 does not
  require it), so every such import searches sys.path and fails. The stub
  makes the import fail at once, with the same outcome (asyncio);
- raw aiohttp: `ClientSession.post` with a prebuilt body and no sink around
  it, as the floor of the client's cost.

Each round runs every variant once, in turn. The table and
bench/results/rest_client.json show the median rate of each variant and the
CPU time that the client process spent per event.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import httpx
import orjson
from aiohttp import web
from common import write_result
from multidict import CIMultiDict, CIMultiDictProxy

from plantbus.connectors.rest.auth import Bearer
from plantbus.connectors.rest.sink import Response, RestSink
from plantbus.errors import RetryableDeliveryError
from plantbus.events.envelope import Event
from plantbus.sim.trytond_server import free_port

BODY = {
    "order": "data.work_order_id",
    "item": "data.item",
    "quantity": {"value": "data.quantity.value", "unit": "data.quantity.unit"},
    "lot": "data.lot",
    "plant": "plant",
}


def serve(port: int) -> None:
    """Run the target server: 201 with an id for every POST."""
    numbers = itertools.count(1)

    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": f"R-{next(numbers)}"}, status=201)

    app = web.Application()
    app.router.add_post("/api/records", create)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class HttpxRestSink(RestSink):
    """The REST sink with its HTTP call made by httpx.AsyncClient."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        await super().start()
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
            timeout=self.timeout_seconds,
        )

    async def close(self) -> None:
        await super().close()
        if self._client is not None:
            await self._client.aclose()

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        assert self._client is not None
        params: dict[str, str] = {}
        if self.credentials is not None:
            await self.credentials.apply(session, headers, params)
        try:
            response = await self._client.request(
                self.method, url, headers=headers, params=params or None, content=body
            )
        except httpx.HTTPError as exc:
            raise RetryableDeliveryError(f"{url} failed: {exc}") from exc
        return Response(
            response.status_code,
            CIMultiDictProxy(CIMultiDict(response.headers.multi_items())),
            response.content,
        )


def make_events(count: int) -> list[Event]:
    """Build work order completed events."""
    return [
        Event.create(
            "production.workorder.completed.v1",
            "urn:plantbus:plant:p1:mes",
            {
                "work_order_id": f"WO-{number:06d}",
                "item": f"BRK-{number % 40:03d}",
                "quantity": {"value": f"{number % 97}.5", "unit": "u"},
                "lot": f"LOT-{number // 10:05d}",
            },
            plant="P1",
        )
        for number in range(count)
    ]


async def run_all(
    deliver: Callable[[Event], Awaitable[Any]], events: list[Event], concurrency: int
) -> float:
    """Deliver every event with `concurrency` workers and return the elapsed seconds."""
    queue = iter(events)

    async def worker() -> None:
        for event in queue:
            await deliver(event)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(
    options: argparse.Namespace, url: str, concurrency: int
) -> dict[str, Any]:
    """Return the median rate and CPU time per event of each variant."""
    events = make_events(options.events)
    common: dict[str, Any] = {
        "body": BODY,
        "credentials": Bearer("bench-token"),
        "max_connections": options.connections,
    }
    aiohttp_sink = RestSink("bench", url, **common)
    httpx_sink = HttpxRestSink("bench", url, **common)
    await aiohttp_sink.start()
    await httpx_sink.start()
    raw = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=options.connections)
    )
    prebuilt = orjson.dumps({"order": "WO-1", "item": "BRK-001"})

    async def raw_post(event: Event) -> Any:
        headers = {"Content-Type": "application/json", "Idempotency-Key": event.id}
        async with raw.post(url, data=prebuilt, headers=headers) as response:
            return (await response.json())["id"]

    variants: dict[str, Callable[[Event], Awaitable[Any]]] = {
        "sink_aiohttp": aiohttp_sink.deliver,
        "sink_httpx": httpx_sink.deliver,
        "sink_httpx_sniffio_stubbed": httpx_sink.deliver,
        "raw_aiohttp": raw_post,
    }
    # One untimed pass warms up connections, token caches and the mapping.
    for deliver in variants.values():
        await run_all(deliver, events[:200], concurrency)
        assert await deliver(events[0])

    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(options.rounds):
        for name, deliver in variants.items():
            if name == "sink_httpx_sniffio_stubbed" and "sniffio" not in sys.modules:
                sys.modules["sniffio"] = None  # type: ignore[assignment]
            cpu_started = time.process_time()
            elapsed = await run_all(deliver, events, concurrency)
            cpu[name].append((time.process_time() - cpu_started) / len(events))
            rates[name].append(len(events) / elapsed)
            if sys.modules.get("sniffio", True) is None:
                del sys.modules["sniffio"]

    await aiohttp_sink.close()
    await httpx_sink.close()
    await raw.close()
    return {
        name: {
            "events_per_second": round(statistics.median(rates[name])),
            "client_cpu_us_per_event": round(statistics.median(cpu[name]) * 1e6, 1),
            "rounds_events_per_second": [round(rate) for rate in rates[name]],
        }
        for name in variants
    }


def wait_for_server(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("The benchmark's target server exited at start.")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"The target server did not listen on port {port} within 20 s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[8, 64],
        help="deliveries in flight, measured once per value",
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="pool size of each client"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve is not None:
        serve(options.serve)
        return

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)],
    )
    try:
        wait_for_server(port, server)
        load_before = os.getloadavg()[0]
        url = f"http://127.0.0.1:{port}/api/records"
        results: dict[str, Any] = {}
        for concurrency in options.concurrency:
            figures = asyncio.run(measure(options, url, concurrency))
            aiohttp_rate = figures["sink_aiohttp"]["events_per_second"]
            for name in ("sink_httpx", "sink_httpx_sniffio_stubbed"):
                figures[f"sink_aiohttp_over_{name}"] = round(
                    aiohttp_rate / figures[name]["events_per_second"], 2
                )
            results[f"concurrency_{concurrency}"] = figures
        load_after = os.getloadavg()[0]
    finally:
        server.terminate()
        server.wait(10)

    path = write_result(
        "rest_client",
        {
            "options": {k: v for k, v in vars(options).items() if k != "serve"},
            "load_average_1m_before": load_before,
            "load_average_1m_after": load_after,
            "aiohttp": version("aiohttp"),
            "httpx": version("httpx"),
            "results": results,
        },
    )

    for setting, figures in results.items():
        print(f"{setting}:")
        print(f"  {'variant':<28}{'events/s':>12}{'client CPU µs/event':>22}")
        for name, value in figures.items():
            if isinstance(value, dict):
                print(
                    f"  {name:<28}{value['events_per_second']:>12,}"
                    f"{value['client_cpu_us_per_event']:>22}"
                )
            else:
                print(f"  {name}: {value}x")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
