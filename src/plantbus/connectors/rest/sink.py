"""Deliver events to a REST API, such as a SaaS platform's, one request per event.

Each sink keeps one aiohttp session with a bounded connection pool, so a burst
of deliveries queues for the `max_connections` pooled connections instead of
opening one connection per event. Every request carries an Idempotency-Key
header (the event id unless configured otherwise), so that the target can
respond to a repeated delivery with the record it already created.

How responses become outcomes:

* 2xx: delivered. The reference is the `reference` expression on the JSON
  body (by default its `id`), else the Location header.
* 409: delivered, because the target already has a request with this
  idempotency key.
* 401: with OAuth2, the token is fetched again and the request is sent once
  more. A second 401 is permanent.
* 429 and 503: retryable, with the Retry-After header as the earliest retry.
* other 5xx, 408, timeouts and connection errors: retryable.
* other 4xx: permanent, and the message quotes the target's problem document.
"""

from __future__ import annotations

import email.utils
import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from plantbus.config.model import RestSinkConfig
from plantbus.connectors.base import Sink
from plantbus.connectors.rest.auth import Credentials, build_credentials
from plantbus.errors import (
    MappingError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from plantbus.events.envelope import Event
from plantbus.pipeline.mapping import (
    UNDEFINED,
    Expression,
    Mapping,
    MappingSpec,
    compile_expression,
)

logger = logging.getLogger("plantbus.connectors.rest")

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# Maximum length of the response body excerpt that an error message quotes.
_EXCERPT = 500
# Bytes of a response body that the sink reads, at most. NOTE: a JSON body
# longer than this cannot be parsed, so its reference is the Location header.
_MAX_BODY = 1024 * 1024


class Template:
    """A string with `{expression}` placeholders that JSONata fills from an event."""

    def __init__(self, text: str, *, url: bool) -> None:
        self.text = text
        self.url = url
        self._parts: list[str | Expression] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            self._parts.append(text[position : match.start()])
            self._parts.append(compile_expression(match.group(1).strip()))
            position = match.end()
        self._parts.append(text[position:])

    def render(self, event: dict[str, Any]) -> str:
        """Fill the placeholders, percent-encoding each URL value as one segment."""
        pieces: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            value = part.evaluate(event)
            if value is UNDEFINED or value is None or isinstance(value, (dict, list)):
                raise MappingError(
                    f"Placeholder {{{part.source}}} of {self.text!r} produced "
                    f"{_value_text(value)} for event {event.get('id')!r}: "
                    "expected a string or a number. Check "
                    "that the events routed to this sink carry that field.",
                    expression=part.source,
                    event_id=event.get("id"),
                )
            text = _scalar_text(value)
            if not self.url and any(char in text for char in "\r\n\x00"):
                # aiohttp rejects such a header only when it sends it, and
                # the error would look like a retryable network failure.
                raise MappingError(
                    f"Placeholder {{{part.source}}} of header {self.text!r} "
                    f"produced {text[:80]!r} for event {event.get('id')!r}, which "
                    "contains a line break or NUL that no HTTP header may "
                    "contain. Correct the event or the header template.",
                    expression=part.source,
                    event_id=event.get("id"),
                )
            pieces.append(quote(text, safe="") if self.url else text)
        return "".join(pieces)


@dataclass(slots=True)
class Response:
    """The parts of an HTTP response that decide a delivery's outcome."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON, or None when it is not JSON."""
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class RestSink(Sink):
    """Send each event as one HTTP request to a REST API."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        body: MappingSpec | None = None,
        idempotency_key: str | None = None,
        idempotency_header: str = "Idempotency-Key",
        reference: str = "id",
        credentials: Credentials | None = None,
        max_connections: int = 8,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.name = name
        self.method = method
        self.url = Template(url, url=True)
        self.headers = {
            header: Template(value, url=False)
            for header, value in (headers or {}).items()
        }
        self.body = Mapping(body) if body is not None else None
        self.idempotency_key = (
            compile_expression(idempotency_key) if idempotency_key else None
        )
        self.idempotency_header = idempotency_header
        self.reference = compile_expression(reference)
        self.credentials = credentials
        self.max_connections = max_connections
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: RestSinkConfig) -> RestSink:
        """Build a sink from its section of the hub file."""
        return cls(
            config.name,
            config.url,
            method=config.method,
            headers=config.headers,
            body=config.body,
            idempotency_key=config.idempotency_key,
            idempotency_header=config.idempotency_header,
            reference=config.reference,
            credentials=build_credentials(config.auth),
            max_connections=config.max_connections,
            timeout_seconds=config.timeout_seconds,
        )

    async def start(self) -> None:
        """Open the session and its connection pool."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self.max_connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )
        logger.info(
            "REST sink %s started: %s %s, up to %d connections",
            self.name,
            self.method,
            self.url.text,
            self.max_connections,
        )

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is None:
            return
        await self._session.close()
        self._session = None
        logger.info("REST sink %s closed", self.name)

    def describe(self) -> dict[str, Any]:
        """Return the sink's method, URL template, auth scheme and pool size."""
        return {
            **super().describe(),
            "target": self.url.text,
            "method": self.method,
            "auth": type(self.credentials).__name__ if self.credentials else None,
            "max_connections": self.max_connections,
        }

    async def deliver(self, event: Event) -> str | None:
        """Send one event and return the target's reference for the record."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        document = event.to_dict()
        try:
            url, headers, body = self._request(event, document)
        except MappingError as exc:
            raise PermanentDeliveryError(
                f"Sink {self.name!r} cannot build the request for event "
                f"{event.id!r}: {exc}"
            ) from exc

        response = await self._send(self._session, url, headers, body)
        # A target may reject a token before its stated expiry, for example
        # after a key rotation, so the sink fetches one new token and retries once.
        if (
            response.status == 401
            and self.credentials is not None
            and self.credentials.rejected(headers)
        ):
            response = await self._send(self._session, url, headers, body)
        return self._outcome(event, url, response)

    def _request(
        self, event: Event, document: dict[str, Any]
    ) -> tuple[str, dict[str, str], bytes]:
        url = self.url.render(document)
        headers = {name: value.render(document) for name, value in self.headers.items()}
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Accept", "application/json")
        headers[self.idempotency_header] = self._idempotency_key(event, document)
        payload = self.body.apply(document) if self.body is not None else event.data
        return url, headers, orjson.dumps(payload)

    def _idempotency_key(self, event: Event, document: dict[str, Any]) -> str:
        if self.idempotency_key is None:
            return event.id
        value = self.idempotency_key.evaluate(document)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return _scalar_text(value)
        raise MappingError(
            f"The idempotency key expression {self.idempotency_key.source!r} "
            f"produced {_value_text(value)}: expected a string or a number that "
            "is the same on every delivery of the event.",
            expression=self.idempotency_key.source,
            event_id=event.id,
        )

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        params: dict[str, str] = {}
        if self.credentials is not None:
            await self.credentials.apply(session, headers, params)
        try:
            # Redirects are not followed, because aiohttp 3.x turns a POST
            # redirected with 301, 302 or 303 into a GET, whose 200 would count
            # as a delivery that never happened.
            async with session.request(
                self.method,
                url,
                headers=headers,
                params=params or None,
                data=body,
                allow_redirects=False,
            ) as response:
                return Response(
                    response.status, response.headers, await _read_head(response)
                )
        except TimeoutError as exc:
            raise RetryableDeliveryError(
                f"{self.method} {url} timed out after {self.timeout_seconds} s "
                f"(`timeout_seconds` of sink {self.name!r}). The delivery will be "
                "retried."
            ) from exc
        except aiohttp.ClientError as exc:
            raise RetryableDeliveryError(
                f"{self.method} {url} failed: {type(exc).__name__}: {exc}. The "
                "delivery will be retried."
            ) from exc

    def _outcome(self, event: Event, url: str, response: Response) -> str | None:
        status = response.status
        if 200 <= status < 300 or status == 409:
            reference = self._reference(response)
            logger.debug(
                "Delivered event %s to %s with HTTP %d as %s",
                event.id,
                url,
                status,
                reference,
                extra={"event_id": event.id, "correlation_id": event.correlationid},
            )
            return reference

        problem = describe_problem(response)
        where = f"{self.method} {url} for event {event.id!r} returned HTTP {status}"
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = f" after {retry_after:.1f} s" if retry_after is not None else ""
            raise RetryableDeliveryError(
                f"{where}: {problem}. The delivery will be retried{wait}.",
                retry_after=retry_after,
            )
        if status >= 500 or status == 408:
            raise RetryableDeliveryError(
                f"{where}: {problem}. The delivery will be retried."
            )
        if 300 <= status < 400:
            location = response.headers.get("Location")
            raise PermanentDeliveryError(
                f"{where}, a redirect to {location!r}, which plantbus does not "
                f"follow. Set `url` of sink {self.name!r} to the address the "
                "target names, then redrive the dead letter."
            )
        if status in (401, 403):
            raise PermanentDeliveryError(
                f"{where}: {problem}. Check the credentials in the `auth` section "
                f"of sink {self.name!r}, then redrive the dead letter."
            )
        raise PermanentDeliveryError(
            f"{where}: {problem}. Correct the event or the `body` mapping of sink "
            f"{self.name!r}, then redrive the dead letter."
        )

    def _reference(self, response: Response) -> str | None:
        document = response.json()
        if isinstance(document, dict):
            try:
                value = self.reference.evaluate(document)
            except MappingError:
                value = UNDEFINED
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                return str(value)
        return response.headers.get("Location")


async def _read_head(response: aiohttp.ClientResponse) -> bytes:
    """Read at most `_MAX_BODY` bytes of a response body and leave the rest unread."""
    body = bytearray()
    while len(body) < _MAX_BODY:
        chunk = await response.content.read(_MAX_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def parse_retry_after(value: str | None) -> float | None:
    """Return the wait in seconds that a Retry-After header requests, or None.

    The header is either delay seconds or an HTTP date (RFC 9110 section
    10.2.3); a date in the past means no wait.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None

    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def describe_problem(response: Response) -> str:
    """Quote the target's error: an RFC 9457 problem document, else the body text."""
    document = response.json()
    if not isinstance(document, dict):
        text = response.body[:_EXCERPT].decode("utf-8", "replace").strip()
        return repr(text) if text else "an empty body"

    parts = []
    for name in ("title", "detail"):
        if isinstance(document.get(name), str):
            parts.append(document[name].rstrip("."))
    # Problem documents name individual violations in an extension member,
    # usually `errors` or `invalid_params`.
    for name in ("errors", "invalid_params", "invalid-params"):
        if document.get(name):
            parts.append(f"{name} {orjson.dumps(document[name]).decode()}")
    text = ": ".join(parts[:2]) + "".join(f"; {part}" for part in parts[2:])
    if not text:
        text = orjson.dumps(document).decode()
    if len(text) > _EXCERPT:
        text = text[:_EXCERPT] + "..."
    return text


def _value_text(value: Any) -> str:
    """Describe an expression result for an error message."""
    return "no value" if value is UNDEFINED else repr(value)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
