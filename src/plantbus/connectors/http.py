"""The HTTP source: serve the plantbus API with uvicorn inside the hub process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from plantbus.api.app import DEFAULT_MAX_BODY_BYTES, create_app
from plantbus.api.backpressure import BacklogGuard
from plantbus.connectors.base import Ingest, Reject, Source
from plantbus.errors import ConfigError
from plantbus.events.catalogue import Catalogue

if TYPE_CHECKING:
    from plantbus.admin import AdminService

logger = logging.getLogger("plantbus.connectors.http")


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the hub."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The hub owns SIGINT and SIGTERM and stops sources through their
        # `stop` event; uvicorn's handlers would replace the hub's.
        yield


class HttpSource(Source):
    """Take CloudEvents over HTTP (`POST /v1/events`) and serve the rest of the API."""

    # Every worker may serve the API; a load balancer spreads the requests.
    exclusive = False

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        name: str = "http",
        host: str = "127.0.0.1",
        port: int = 8080,
        allow_unknown_types: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        graceful_shutdown_seconds: float = 10.0,
        admin: AdminService | None = None,
        backlog_guard: BacklogGuard | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(
                f"HTTP source {name!r} option `port` is {port!r}: expected 0 to "
                f"65535, where 0 lets the system pick a free port."
            )
        self.name = name
        self.catalogue = catalogue
        self.host = host
        self.port = port
        self.allow_unknown_types = allow_unknown_types
        self.max_body_bytes = max_body_bytes
        self.graceful_shutdown_seconds = graceful_shutdown_seconds
        self.admin = admin
        self.backlog_guard = backlog_guard
        self._started = asyncio.Event()

    @property
    def bound_port(self) -> int:
        """Return the port the server listens on; with port 0 the system's pick."""
        if not self._started.is_set():
            raise RuntimeError(
                f"HTTP source {self.name!r} has not bound its port yet; await "
                f"`wait_started()` first."
            )
        return self.port

    async def wait_started(self) -> None:
        """Wait until the server listens on its port."""
        await self._started.wait()

    async def run(self, ingest: Ingest, reject: Reject, stop: asyncio.Event) -> None:
        """Serve the API until `stop` is set, then finish open requests and return.

        Invalid requests get an error response, so `reject` stays unused: the
        client still has the input and can fix and resend it.
        """
        app = create_app(
            ingest,
            catalogue=self.catalogue,
            allow_unknown_types=self.allow_unknown_types,
            max_body_bytes=self.max_body_bytes,
            admin=self.admin,
            backlog_guard=self.backlog_guard,
        )
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(self.graceful_shutdown_seconds),
        )
        server = _EmbeddedServer(config)

        # Binding here, not in uvicorn, turns a port in use into a ConfigError
        # where uvicorn would call sys.exit.
        listener = self._bind()
        self.port = listener.getsockname()[1]
        logger.info(
            "HTTP source %r listening on http://%s:%d/v1",
            self.name,
            self.host,
            self.port,
        )
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        stopping = asyncio.create_task(stop.wait())
        self._started.set()
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            await serving
        finally:
            stopping.cancel()
            if not serving.done():
                server.should_exit = True
                server.force_exit = True
                await asyncio.gather(serving, return_exceptions=True)
            listener.close()
            self._started.clear()
        logger.info("HTTP source %r stopped", self.name)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            listener = socket.create_server((self.host, self.port), family=family)
        except OSError as exc:
            raise ConfigError(
                f"HTTP source {self.name!r} cannot listen on {self.host!r} port "
                f"{self.port!r}: {exc.strerror}. Choose another `host` or `port`."
            ) from exc
        listener.setblocking(False)
        return listener
