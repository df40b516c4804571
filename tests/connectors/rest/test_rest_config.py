"""Retry-After parsing, problem quoting and the REST sink's hub file section."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from plantbus.config.loader import load_hub
from plantbus.connectors.rest.auth import OAuth2ClientCredentials
from plantbus.connectors.rest.sink import (
    Response,
    RestSink,
    describe_problem,
    parse_retry_after,
)
from plantbus.errors import ConfigError


def test_parse_retry_after_reads_seconds() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0


def test_parse_retry_after_reads_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)

    seconds = parse_retry_after(format_datetime(later, usegmt=True))

    assert seconds is not None
    assert 25 <= seconds <= 31


def test_parse_retry_after_past_date_means_no_wait() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "-5x"])
def test_parse_retry_after_unreadable_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def response(status: int, body: bytes) -> Response:
    return Response(status, CIMultiDictProxy(CIMultiDict()), body)


def test_describe_problem_quotes_title_detail_and_errors() -> None:
    body = (
        b'{"type": "about:blank", "title": "Invalid", "detail": "Bad quantity.",'
        b' "errors": [{"field": "qty", "value": "-1", "rule": "positive"}]}'
    )

    text = describe_problem(response(422, body))

    assert text.startswith("Invalid: Bad quantity")
    assert '"field":"qty"' in text
    assert '"value":"-1"' in text


def test_describe_problem_quotes_plain_text() -> None:
    assert describe_problem(response(400, b"no such order\n")) == "'no such order'"
    assert describe_problem(response(400, b"")) == "an empty body"


def test_rest_sink_config_reads_secret_from_environment(tmp_path: Path) -> None:
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(
        """
sinks:
  - name: qms
    kind: rest
    url: http://127.0.0.1:9000/api/v2/nonconformances
    body:
      item: data.item
    max_connections: 3
    auth:
      kind: oauth2_client_credentials
      token_url: http://127.0.0.1:9000/oauth/token
      client_id: plantbus
      client_secret: ${QMS_SECRET}
      scope: nonconformance.write
"""
    )

    config = load_hub(hub_file, environ={"QMS_SECRET": "s3cret"})
    sink = RestSink.from_config(config.sinks[0])  # type: ignore[arg-type]

    assert isinstance(sink.credentials, OAuth2ClientCredentials)
    assert sink.credentials.client_secret == "s3cret"
    assert sink.credentials.scope == "nonconformance.write"
    assert sink.max_connections == 3
    assert sink.describe()["auth"] == "OAuth2ClientCredentials"


def test_rest_sink_config_rejects_unknown_auth_kind(tmp_path: Path) -> None:
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(
        """
sinks:
  - name: qms
    kind: rest
    url: http://127.0.0.1:9000/api
    auth:
      kind: basic
      user: x
"""
    )

    with pytest.raises(ConfigError, match="auth"):
        load_hub(hub_file, environ={})


def test_rest_sink_invalid_jsonata_is_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid"):
        RestSink("x", "http://127.0.0.1:9/api/{data.(}")


def test_rest_sink_config_rejects_non_http_url(tmp_path: Path) -> None:
    hub_file = tmp_path / "hub.yaml"
    hub_file.write_text(
        """
sinks:
  - name: qms
    kind: rest
    url: 127.0.0.1:9000/api
"""
    )

    with pytest.raises(ConfigError, match="url"):
        load_hub(hub_file, environ={})
