"""Credentials that the REST sink adds to each request.

Three schemes: OAuth 2.0 client credentials (RFC 6749 section 4.4) with a
cached access token, an API key in a header or the query string, and a fixed
bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import Any

import aiohttp

from plantbus.config.model import (
    ApiKeyAuth,
    BearerAuth,
    OAuth2ClientCredentialsAuth,
    RestAuthConfig,
)
from plantbus.errors import PermanentDeliveryError, RetryableDeliveryError

logger = logging.getLogger("plantbus.connectors.rest")


class Credentials(ABC):
    """A scheme that puts credentials on outgoing requests."""

    @abstractmethod
    async def apply(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        params: dict[str, str],
    ) -> None:
        """Add the credentials to the headers or query parameters of a request."""

    def rejected(self, headers: dict[str, str]) -> bool:
        """Drop credentials that the target rejected with 401.

        Return True when a new attempt can carry different credentials.
        """
        return False


class ApiKey(Credentials):
    """A fixed API key in a header or a query parameter."""

    def __init__(self, name: str, value: str, location: str = "header") -> None:
        self.name = name
        self.value = value
        self.location = location

    async def apply(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        params: dict[str, str],
    ) -> None:
        """Add the key under its name."""
        if self.location == "query":
            params[self.name] = self.value
        else:
            headers[self.name] = self.value


class Bearer(Credentials):
    """A fixed bearer token in the Authorization header."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def apply(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        params: dict[str, str],
    ) -> None:
        """Add `Authorization: Bearer <token>`."""
        headers["Authorization"] = f"Bearer {self.token}"


class OAuth2ClientCredentials(Credentials):
    """An access token from a token endpoint, cached until shortly before expiry.

    Concurrent deliveries that find no valid token wait on one lock, so only
    the first fetches a token and the others reuse it.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        refresh_margin_seconds: float = 30.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.refresh_margin_seconds = refresh_margin_seconds
        self.tokens_fetched = 0
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def apply(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        params: dict[str, str],
    ) -> None:
        """Add `Authorization: Bearer <token>`, fetching a token when needed."""
        headers["Authorization"] = f"Bearer {await self.token(session)}"

    def rejected(self, headers: dict[str, str]) -> bool:
        """Forget the token that the request carried, unless a newer one exists."""
        sent = headers.get("Authorization", "").removeprefix("Bearer ")
        # Many deliveries may get 401 for the same expired token. Only the
        # first drops it, and the others use the token fetched after it.
        if sent == self._token:
            self._token = None
        return True

    async def token(self, session: aiohttp.ClientSession) -> str:
        """Return a valid access token, fetching one under the lock if none is valid."""
        token = self._valid_token()
        if token is not None:
            return token
        async with self._lock:
            token = self._valid_token()
            if token is not None:
                return token
            return await self._fetch(session)

    def _valid_token(self) -> str | None:
        if self._token is None or time.monotonic() >= self._expires_at:
            return None
        return self._token

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        if self.scope:
            form["scope"] = self.scope
        started = time.monotonic()
        try:
            async with session.post(self.token_url, data=form) as response:
                status = response.status
                text = await response.text()
                document: Any = None
                if response.content_type.endswith("json"):
                    document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableDeliveryError(
                f"The token request to {self.token_url!r} failed: "
                f"{type(exc).__name__}: {exc}. The delivery will be retried."
            ) from exc

        if status >= 500 or status == 429:
            raise RetryableDeliveryError(
                f"The token endpoint {self.token_url!r} returned HTTP {status}: "
                f"{text[:300]!r}. The delivery will be retried."
            )
        if status != 200 or not isinstance(document, dict):
            raise PermanentDeliveryError(
                f"The token endpoint {self.token_url!r} rejected client "
                f"{self.client_id!r} with HTTP {status}: {text[:300]!r}. Check "
                "`auth.client_id`, `auth.client_secret` and `auth.scope` of the sink."
            )
        token = document.get("access_token")
        if not isinstance(token, str) or not token:
            raise PermanentDeliveryError(
                f"The token endpoint {self.token_url!r} returned no `access_token` "
                f"string in {text[:300]!r}; check `auth.token_url` of the sink."
            )

        # RFC 6749 section 5.1 only recommends expires_in. Without a number
        # there, the token is assumed to last one hour, and a 401 before then
        # still makes the sink fetch a new token.
        expires_in = document.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 3600.0
        self._token = token
        self._expires_at = started + max(0.0, lifetime - self.refresh_margin_seconds)
        self.tokens_fetched += 1
        logger.info(
            "Fetched an access token for client %s from %s, valid for %.0f s",
            self.client_id,
            self.token_url,
            lifetime,
        )
        return token


def build_credentials(config: RestAuthConfig | None) -> Credentials | None:
    """Build the credentials of a sink's `auth` section."""
    if config is None:
        return None
    if isinstance(config, OAuth2ClientCredentialsAuth):
        return OAuth2ClientCredentials(
            config.token_url,
            config.client_id,
            config.client_secret,
            scope=config.scope,
            refresh_margin_seconds=config.refresh_margin_seconds,
        )
    if isinstance(config, ApiKeyAuth):
        return ApiKey(config.name, config.value, config.location)
    if isinstance(config, BearerAuth):
        return Bearer(config.token)
    raise AssertionError(f"unhandled auth config {config!r}")
