"""An asynchronous JSON-RPC client for the Tryton server.

Tryton responds to `POST /<database>/rpc/` with `{"id", "result"}` or
`{"id", "error"}`. A Tryton exception arrives as HTTP 200 with
`error = [class name, arguments]`, for example
`["UserError", [message, description, domain]]`; a session that expired or
never existed is HTTP 401. Values that JSON lacks travel as objects tagged with
`__class__` (Decimal, date, datetime, time, timedelta, bytes); `encode` and
`decode` convert them. Tryton stores datetimes as naive UTC, so aware datetimes
are sent in UTC and datetimes come back aware in UTC.

Errors map onto the delivery errors of plantbus: Tryton's user errors,
warnings and access errors are permanent (`TrytonError`); connection failures,
timeouts, 5xx, 429 and concurrency conflicts are retryable.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import aiohttp

from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError

logger = logging.getLogger("plantbus.connectors.tryton")

# Tryton exceptions that another attempt may get past.
_RETRYABLE_KINDS = frozenset({"ConcurrencyException", "RateLimitException"})
# Fragments of server error texts that mean "busy", not "wrong".
_BUSY_TEXTS = ("database is locked", "could not serialize", "timeout", "deadlock")


class TrytonError(PermanentDeliveryError):
    """Tryton rejected a call with a user error, warning or access error."""

    def __init__(self, method: str, kind: str, message: str, description: str = ""):
        self.method = method
        self.kind = kind
        self.message = message
        self.description = description
        detail = f" {description}" if description else ""
        super().__init__(f"Tryton rejected {method!r} with {kind}: {message}{detail}")


def encode(value: Any) -> Any:
    """Return a JSON-ready copy of `value` with Tryton's tagged objects."""
    if isinstance(value, Mapping):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(item) for item in value]
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    # datetime before date because a datetime is also a date.
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {
            "__class__": "date",
            "year": value.year,
            "month": value.month,
            "day": value.day,
        }
    if isinstance(value, dt.time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, (bytes, bytearray)):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode()}
    return value


def _decode_object(document: dict[str, Any]) -> Any:
    kind = document.get("__class__")
    if kind == "Decimal":
        return Decimal(document["decimal"])
    if kind == "datetime":
        return dt.datetime(
            document["year"],
            document["month"],
            document["day"],
            document["hour"],
            document["minute"],
            document["second"],
            document["microsecond"],
            tzinfo=dt.UTC,
        )
    if kind == "date":
        return dt.date(document["year"], document["month"], document["day"])
    if kind == "time":
        return dt.time(
            document["hour"],
            document["minute"],
            document["second"],
            document["microsecond"],
        )
    if kind == "timedelta":
        return dt.timedelta(seconds=document["seconds"])
    if kind == "bytes":
        return base64.b64decode(document["base64"])
    return document


def decode(body: bytes | str) -> Any:
    """Parse a Tryton JSON-RPC body, turning tagged objects into Python values."""
    return json.loads(body, object_hook=_decode_object)


class TrytonClient:
    """A pooled JSON-RPC session with one Tryton database."""

    def __init__(
        self,
        url: str,
        database: str,
        login: str,
        password: str,
        *,
        max_connections: int = 8,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.login_name = login
        self._password = password
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._authorization: str | None = None
        self._login_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.user_id: int | None = None
        # The user's preferences (company, language, ...) sent with model calls.
        self.context: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        """Return the RPC URL of the database."""
        return f"{self.url}/{self.database}/rpc/"

    async def __aenter__(self) -> TrytonClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the connection pool and log in."""
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._http = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout
            )
        if self._authorization is None:
            await self.login()

    async def close(self) -> None:
        """Close the connection pool; the Tryton session simply expires."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._authorization = None

    async def login(self) -> None:
        """Log in with the password and load the user's context."""
        status, body = await self._post(
            "common.db.login",
            [self.login_name, {"password": self._password}],
            authorization=None,
        )
        if status in (401, 403):
            raise PermanentDeliveryError(
                f"Tryton login of user {self.login_name!r} on database "
                f"{self.database!r} failed with HTTP {status}: check the login "
                "and password."
            )
        result = self._result("common.db.login", status, body)
        user_id, session = result[0], result[1]
        token = f"{self.login_name}:{user_id}:{session}".encode()
        self._authorization = "Session " + base64.b64encode(token).decode()
        self.user_id = int(user_id)
        preferences = await self.call("model.res.user.get_preferences", True, {})
        self.context = dict(preferences)
        logger.info(
            "Logged in to Tryton database %s as %s (user %s)",
            self.database,
            self.login_name,
            user_id,
        )

    async def call(self, method: str, *params: Any) -> Any:
        """Call one RPC method and return its result, logging in again if needed."""
        if self._http is None:
            await self.start()
        authorization = self._authorization
        status, body = await self._post(method, list(params), authorization)
        if status == 401:
            # The session expired or the server restarted: one new login, once.
            async with self._login_lock:
                if self._authorization == authorization:
                    logger.info("Tryton session expired; logging in again")
                    await self.login()
            status, body = await self._post(method, list(params), self._authorization)
        return self._result(method, status, body)

    async def _post(
        self, method: str, params: list[Any], authorization: str | None
    ) -> tuple[int, bytes]:
        assert self._http is not None
        payload = json.dumps(
            {"id": next(self._ids), "method": method, "params": encode(params)}
        )
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            async with self._http.post(
                self.endpoint, data=payload, headers=headers
            ) as response:
                body = await response.read()
                if response.status == 429:
                    retry_after = response.headers.get("Retry-After")
                    raise RetryableDeliveryError(
                        f"Tryton rate-limited {method!r} (HTTP 429); retry later.",
                        retry_after=float(retry_after) if retry_after else None,
                    )
                return response.status, body
        except TimeoutError as exc:
            raise RetryableDeliveryError(
                f"Tryton call {method!r} to {self.endpoint} timed out after "
                f"{self._timeout.total:g} s; trytond is overloaded or stuck."
            ) from exc
        except aiohttp.ClientError as exc:
            raise RetryableDeliveryError(
                f"Tryton call {method!r} to {self.endpoint} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _result(self, method: str, status: int, body: bytes) -> Any:
        if status >= 500:
            raise RetryableDeliveryError(
                f"Tryton responded to {method!r} with HTTP {status}: "
                f"{body[:200].decode('utf-8', 'replace')}"
            )
        if status != 200:
            raise PermanentDeliveryError(
                f"Tryton responded to {method!r} with HTTP {status}: "
                f"{body[:200].decode('utf-8', 'replace')}; check the method name, "
                "the user's access rights and the parameters."
            )
        document = decode(body)
        if "error" not in document or document["error"] is None:
            return document.get("result")
        raise _error(method, document["error"])

    # Model helpers: Tryton's model methods take the context as last argument.

    async def execute(self, model: str, method: str, *args: Any) -> Any:
        """Call `model.<model>.<method>` with the user's context appended."""
        return await self.call(f"model.{model}.{method}", *args, self.context)

    async def search(
        self,
        model: str,
        domain: Sequence[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: Sequence[tuple[str, str]] | None = None,
    ) -> list[int]:
        """Return the ids of the records that match a Tryton domain."""
        ids = await self.execute(model, "search", list(domain), offset, limit, order)
        return list(ids)

    async def read(
        self, model: str, ids: Sequence[int], fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Read fields of records by id, in the order of `ids`."""
        if not ids:
            return []
        rows = await self.execute(model, "read", list(ids), list(fields))
        return list(rows)

    async def search_read(
        self,
        model: str,
        domain: Sequence[Any],
        fields: Sequence[str],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: Sequence[tuple[str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Return fields of the records that match a Tryton domain."""
        rows = await self.execute(
            model, "search_read", list(domain), offset, limit, order, list(fields)
        )
        return list(rows)

    async def create(
        self, model: str, values: Sequence[Mapping[str, Any]]
    ) -> list[int]:
        """Create records and return their ids."""
        ids = await self.execute(model, "create", [dict(v) for v in values])
        return list(ids)

    async def write(
        self, model: str, ids: Sequence[int], values: Mapping[str, Any]
    ) -> None:
        """Write the same values to records."""
        await self.execute(model, "write", list(ids), dict(values))

    async def button(self, model: str, name: str, ids: Sequence[int]) -> Any:
        """Press a workflow button such as `do` or `run` on records."""
        return await self.execute(model, name, list(ids))


def _error(method: str, error: Any) -> PermanentDeliveryError | RetryableDeliveryError:
    """Map the `error` member of a Tryton response onto a plantbus delivery error."""
    kind = str(error[0]) if isinstance(error, list) and error else "Error"
    arguments = error[1] if isinstance(error, list) and len(error) > 1 else None
    if kind in _RETRYABLE_KINDS:
        return RetryableDeliveryError(
            f"Tryton could not run {method!r} now ({kind}: {arguments}); retry later."
        )
    if kind == "UserError" and isinstance(arguments, list):
        return TrytonError(method, kind, str(arguments[0]), str(arguments[1] or ""))
    if kind == "UserWarning" and isinstance(arguments, list):
        return TrytonError(method, kind, str(arguments[1]), str(arguments[2] or ""))
    if kind == "LoginException":
        return TrytonError(method, kind, str(arguments))

    # Any other exception is a server-side failure: `[text, traceback]`.
    text = kind
    if any(fragment in text.lower() for fragment in _BUSY_TEXTS):
        return RetryableDeliveryError(
            f"Tryton was busy running {method!r}: {text}; retry later."
        )
    return TrytonError(method, "ServerError", text)
