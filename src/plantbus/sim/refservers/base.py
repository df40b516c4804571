"""The shared part of the reference servers: auth, rate limit, faults, records.

A reference server takes the place of a SaaS system that has no open-source
implementation. It behaves like a typical REST API of such a system:

* OAuth 2.0 client credentials at POST /oauth/token, or an API key in a
  header or the `api_key` query parameter; requests without valid
  credentials get 401.
* A token bucket rate limit; requests over it get 429 with Retry-After.
* Request bodies checked by pydantic models; invalid ones get 422 with an
  RFC 9457 problem document whose `errors` name the field, value and rule.
* An Idempotency-Key header: the same key with the same body returns the
  record created first; the same key with another body gets 422.
* Faults that a test switches on at run time through `faults` or
  PUT /_admin/faults: latency, hanging requests, 500s, 503s and 429 storms.

Admin endpoints under /_admin need no credentials and stay out of the
OpenAPI document.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery, OAuth2
from pydantic import BaseModel, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from plantbus.sim.refservers.auth import API_KEY_QUERY, TOKEN_PATH, ClientAuth
from plantbus.sim.refservers.faults import Faults, FaultSettings, RateLimit, TokenBucket
from plantbus.sim.refservers.problems import (
    Problem,
    problem_response,
    record_not_found,
    validation_problem,
)
from plantbus.sim.refservers.records import Collection, Duplicate, KeyReused

logger = logging.getLogger("plantbus.sim.refservers")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RefServer:
    """One reference server: its FastAPI app, records, credentials and faults."""

    def __init__(
        self,
        system: str,
        title: str,
        *,
        api_prefix: str,
        client_id: str = "plantbus",
        client_secret: str = "plantbus-secret",
        api_keys: tuple[str, ...] = ("plantbus-key",),
        api_key_header: str = "X-API-Key",
        token_lifetime_seconds: float = 3600.0,
        rate_limit: RateLimit | None = None,
        seed: int | None = None,
    ) -> None:
        self.system = system
        self.auth = ClientAuth(
            client_id, client_secret, api_keys, api_key_header, token_lifetime_seconds
        )
        self.faults = Faults(seed)
        self.rate_limit = TokenBucket(rate_limit)
        self.collections: dict[str, Collection] = {}
        self.requests = 0
        # (host, port) of every client connection that sent a request.
        self.peers: set[tuple[str, int]] = set()
        self._uvicorn: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

        self.app = FastAPI(
            title=title,
            version="1.0.0",
            description=(
                f"{title}, a stand-in for testing integrations. Authenticate "
                "with a bearer token from POST /oauth/token (client "
                "credentials) or an API key header; switch faults with "
                "PUT /_admin/faults."
            ),
        )
        self._install_handlers()
        self.app.add_api_route(
            TOKEN_PATH, self.auth.token, methods=["POST"], tags=["auth"]
        )
        self._install_admin()
        self.router = APIRouter(
            prefix=api_prefix, dependencies=[Depends(self._guard())]
        )

    # -- building ---------------------------------------------------------

    def add_collection(
        self,
        path: str,
        collection: Collection,
        model_in: type[BaseModel],
        model_out: type[BaseModel],
        *,
        tag: str,
        filters: tuple[str, ...] = (),
        creatable: bool = True,
    ) -> None:
        """Add create, list and get endpoints for one kind of record.

        With `creatable` False only list and get are added, for records that
        another endpoint creates.
        """
        self.collections[collection.name] = collection
        page_model = create_model(
            f"{model_out.__name__}Page",
            items=(list[model_out], ...),  # type: ignore[valid-type]
            total=(int, ...),
            offset=(int, ...),
            limit=(int, ...),
            next=(str | None, None),
        )

        async def create(
            request: Request,
            payload: BaseModel,
            idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
        ) -> Response:
            return self._create(
                request, collection, model_out, payload, idempotency_key
            )

        # The body model differs per collection, so the annotation is set
        # here, before FastAPI reads it when the route is added.
        create.__annotations__["payload"] = model_in
        if creatable:
            self.router.add_api_route(
                path,
                create,
                methods=["POST"],
                status_code=201,
                response_model=model_out,
                tags=[tag],
                summary=f"Create a {collection.name} record",
            )

        async def list_records(
            request: Request,
            offset: int = Query(default=0, ge=0),
            limit: int = Query(default=50, ge=1, le=500),
        ) -> dict[str, Any]:
            filter_values = {
                name: request.query_params[name]
                for name in filters
                if name in request.query_params
            }
            items, total = collection.page(offset, limit, filter_values)
            following = None
            if offset + limit < total:
                following = str(request.url.include_query_params(offset=offset + limit))
            return {
                "items": items,
                "total": total,
                "offset": offset,
                "limit": limit,
                "next": following,
            }

        list_records.__doc__ = (
            f"List {collection.name} records in creation order, one page at a time."
            + (f" Filter by {', '.join(filters)}." if filters else "")
        )
        self.router.add_api_route(
            path, list_records, methods=["GET"], response_model=page_model, tags=[tag]
        )

        async def get_record(record_id: str) -> dict[str, Any]:
            record = collection.records.get(record_id)
            if record is None:
                raise record_not_found(f"{collection.name} record", record_id)
            return record

        self.router.add_api_route(
            f"{path}/{{record_id}}",
            get_record,
            methods=["GET"],
            response_model=model_out,
            tags=[tag],
            summary=f"Get one {collection.name} record",
        )

    def ready(self) -> RefServer:
        """Mount the API routes. Call this once, after every route is added."""
        self.app.include_router(self.router)
        return self

    # -- running ----------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a task and return the base URL. Port 0 picks a free port."""
        config = uvicorn.Config(
            self.asgi,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
            timeout_graceful_shutdown=1,
        )
        self._uvicorn = uvicorn.Server(config)
        self._task = asyncio.create_task(self._uvicorn.serve())
        while not self._uvicorn.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(
                    f"The {self.system} reference server stopped at start."
                )
            await asyncio.sleep(0.01)
        self.port = self._uvicorn.servers[0].sockets[0].getsockname()[1]
        logger.info("%s reference server listening on %s", self.system, self.url)
        return self.url

    def run(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serve in the foreground until SIGINT or SIGTERM."""
        logger.info("%s reference server starting on %s:%d", self.system, host, port)
        uvicorn.run(self.asgi, host=host, port=port, interface="asgi3", lifespan="off")

    async def stop(self) -> None:
        """Stop serving and release hanging requests."""
        if self._uvicorn is None or self._task is None:
            return
        self.faults.release()
        self._uvicorn.should_exit = True
        await self._task
        self._uvicorn = None
        self._task = None

    async def __aenter__(self) -> RefServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def tokens(self) -> dict[str, float]:
        """Return the issued access tokens and their monotonic expiry times."""
        return self.auth.tokens

    @property
    def tokens_issued(self) -> int:
        """Return how many access tokens the token endpoint issued."""
        return self.auth.tokens_issued

    @property
    def url(self) -> str:
        """Return the base URL, such as http://127.0.0.1:41234."""
        if self.port is None:
            raise RuntimeError(f"The {self.system} reference server is not running.")
        return f"http://127.0.0.1:{self.port}"

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count requests and client connections, then hand over to the app."""
        if scope["type"] == "http":
            self.requests += 1
            client = scope.get("client")
            if client:
                self.peers.add((client[0], client[1]))
        await self.app(scope, receive, send)

    def reset(self) -> None:
        """Delete every record and token, switch faults off and zero the counters."""
        for collection in self.collections.values():
            collection.clear()
        self.faults.update(FaultSettings())
        self.auth.reset()
        self.requests = 0
        self.peers.clear()

    def stats(self) -> dict[str, Any]:
        """Return request, connection, token and record counts."""
        return {
            "requests": self.requests,
            "connections": len(self.peers),
            "tokens_issued": self.auth.tokens_issued,
            "records": {
                name: len(collection.records)
                for name, collection in self.collections.items()
            },
        }

    # -- request handling -------------------------------------------------

    def _create(
        self,
        request: Request,
        collection: Collection,
        model_out: type[BaseModel],
        payload: BaseModel,
        idempotency_key: str | None,
    ) -> Response:
        try:
            record, created = collection.create(
                payload.model_dump(mode="json"), idempotency_key
            )
        except KeyReused as exc:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                f"Idempotency-Key {idempotency_key!r} was first sent with a "
                "different request body; send a new key for a different request.",
                idempotency_key=idempotency_key,
            ) from exc
        except Duplicate as exc:
            location = f"{request.url.path}/{exc.record['id']}"
            raise Problem(
                409,
                "duplicate",
                "Record exists",
                f"A {collection.name} record with the key {exc.business_key!r} "
                f"exists as {exc.record['id']!r}.",
                headers={"Location": location},
                existing_id=exc.record["id"],
            ) from exc

        headers = {"Location": f"{request.url.path}/{record['id']}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        body = model_out.model_validate(record).model_dump(mode="json")
        return JSONResponse(body, status_code=201, headers=headers)

    def _guard(self) -> Callable[..., Awaitable[None]]:
        oauth2 = OAuth2(
            flows=OAuthFlows(
                clientCredentials=OAuthFlowClientCredentials(tokenUrl=TOKEN_PATH)
            ),
            scheme_name="oauth2",
            auto_error=False,
        )
        api_key = APIKeyHeader(
            name=self.auth.api_key_header, scheme_name="apiKey", auto_error=False
        )
        api_key_query = APIKeyQuery(
            name=API_KEY_QUERY, scheme_name="apiKeyQuery", auto_error=False
        )

        async def guard(
            authorization: str | None = Depends(oauth2),
            key: str | None = Depends(api_key),
            query_key: str | None = Depends(api_key_query),
        ) -> None:
            await self._apply_faults()
            self.auth.authenticate(authorization, key if key is not None else query_key)
            wait = self.rate_limit.take()
            if wait is not None:
                raise Problem(
                    429,
                    "rate-limited",
                    "Too many requests",
                    f"The rate limit is {self.rate_limit.limit.rate_per_second} "
                    f"requests per second; retry after {wait} s.",
                    headers={"Retry-After": str(wait)},
                )

        return guard

    async def _apply_faults(self) -> None:
        settings = self.faults.settings
        if settings.latency_seconds:
            await asyncio.sleep(settings.latency_seconds)
        fault = self.faults.draw()
        retry_after = {"Retry-After": str(settings.retry_after_seconds)}
        if fault == "hang":
            await self.faults.hang()
            raise Problem(
                504, "fault-hang", "Gateway timeout", "The request hung (fault mode)."
            )
        if fault == "error":
            raise Problem(
                500,
                "fault-error",
                "Internal server error",
                "Injected failure (fault mode).",
            )
        if fault == "unavailable":
            raise Problem(
                503,
                "fault-unavailable",
                "Service unavailable",
                "The service is down for maintenance (fault mode).",
                headers=retry_after,
            )
        if fault == "throttle":
            raise Problem(
                429,
                "fault-throttle",
                "Too many requests",
                "The tenant's request quota is used up (fault mode).",
                headers=retry_after,
            )

    def _install_handlers(self) -> None:
        async def on_problem(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, Problem)
            self._log_problem(request, exc)
            return problem_response(exc)

        async def on_invalid(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, RequestValidationError)
            problem = validation_problem(exc)
            self._log_problem(request, problem)
            return problem_response(problem)

        async def on_http(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, StarletteHTTPException)
            return problem_response(
                Problem(exc.status_code, "http", str(exc.detail), str(exc.detail))
            )

        self.app.add_exception_handler(Problem, on_problem)
        self.app.add_exception_handler(RequestValidationError, on_invalid)
        self.app.add_exception_handler(StarletteHTTPException, on_http)

    def _log_problem(self, request: Request, problem: Problem) -> None:
        logger.info(
            "%s %s %s returned %d: %s",
            self.system,
            request.method,
            request.url.path,
            problem.status,
            problem.detail,
        )

    def _install_admin(self) -> None:
        admin = APIRouter(prefix="/_admin", include_in_schema=False)

        @admin.get("/faults")
        async def get_faults() -> FaultSettings:
            return self.faults.settings

        @admin.put("/faults")
        async def put_faults(settings: FaultSettings) -> FaultSettings:
            self.faults.update(settings)
            logger.info("%s faults set to %s", self.system, settings.model_dump())
            return settings

        @admin.put("/rate-limit")
        async def put_rate_limit(limit: RateLimit) -> RateLimit:
            self.rate_limit.configure(limit)
            return limit

        @admin.get("/stats")
        async def get_stats() -> dict[str, Any]:
            return self.stats()

        @admin.post("/reset", status_code=204)
        async def post_reset() -> None:
            self.reset()

        self.app.include_router(admin)
