"""Credentials of a reference server: one OAuth2 client and a set of API keys."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from plantbus.sim.refservers.problems import Problem

TOKEN_PATH = "/oauth/token"
# Query parameter that carries an API key when the header does not.
API_KEY_QUERY = "api_key"


class ClientAuth:
    """The one OAuth2 client and the API keys that a reference server accepts."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        api_keys: tuple[str, ...],
        api_key_header: str,
        token_lifetime_seconds: float,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_keys = set(api_keys)
        self.api_key_header = api_key_header
        self.token_lifetime_seconds = token_lifetime_seconds
        # Access token -> monotonic expiry time.
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0

    def authenticate(self, authorization: str | None, key: str | None) -> None:
        """Raise a 401 problem unless the API key or the bearer token is valid."""
        if key is not None:
            if key in self.api_keys:
                return
            raise Problem(
                401,
                "unauthorized",
                "Invalid API key",
                f"The API key in the {self.api_key_header} header or the "
                f"{API_KEY_QUERY!r} query parameter is unknown.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if authorization is None:
            raise Problem(
                401,
                "unauthorized",
                "Credentials missing",
                f"Send a bearer token from {TOKEN_PATH} or an {self.api_key_header} "
                "header.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = authorization.partition(" ")
        expires = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if expires is None or expires <= time.monotonic():
            raise Problem(
                401,
                "unauthorized",
                "Invalid or expired token",
                "The bearer token is unknown or expired; fetch a new one.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    async def token(self, request: Request) -> Response:
        """Issue an access token for the client credentials grant (RFC 6749 4.4)."""
        form = {
            name: values[0]
            for name, values in parse_qs((await request.body()).decode()).items()
        }
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("Authorization", "")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, _, client_secret = decoded.partition(":")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Only client_credentials is supported.",
                },
                status_code=400,
            )
        if client_id != self.client_id or client_secret != self.client_secret:
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "Unknown client or wrong secret.",
                },
                status_code=401,
            )

        access_token = secrets.token_urlsafe(24)
        self.tokens[access_token] = time.monotonic() + self.token_lifetime_seconds
        self.tokens_issued += 1
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                # Whole seconds as RFC 6749 has them; tests use fractions.
                "expires_in": (
                    int(lifetime)
                    if (lifetime := self.token_lifetime_seconds).is_integer()
                    else lifetime
                ),
                "scope": form.get("scope", ""),
            },
            headers={"Cache-Control": "no-store"},
        )

    def reset(self) -> None:
        """Delete every issued token and zero the count."""
        self.tokens.clear()
        self.tokens_issued = 0
