"""The CloudEvents HTTP protocol binding scenarios, sent to the API as written."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .support import ReadableLog, read_all, samples_root

FEATURE = (
    Path("cloudevents") / "conformance" / "features" / "http-protocol-binding.feature"
)
# Headers that describe the raw request of the feature file rather than the
# event; httpx sets them for the request it sends.
TRANSPORT_HEADERS = frozenset({"host", "content-length"})


@dataclass
class Scenario:
    """One scenario of a feature file, with its outline placeholders filled in."""

    name: str
    request: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    data: str = ""


@dataclass
class _Outline:
    name: str
    docstrings: list[str] = field(default_factory=list)
    attributes: list[list[str]] = field(default_factory=list)
    examples: list[list[str]] = field(default_factory=list)


def parse_feature(text: str) -> list[Scenario]:
    """Read the Scenario Outlines of a Gherkin file and expand their Examples."""
    outlines: list[_Outline] = []
    table: list[list[str]] | None = None
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        line = lines[position]
        stripped = line.strip()
        position += 1

        if stripped.startswith("Scenario"):
            outlines.append(_Outline(stripped.split(":", 1)[1].strip()))
            table = None
        elif stripped == '"""':
            # A docstring runs to the next closing quotes; its indentation is
            # that of the opening quotes.
            indent = line[: len(line) - len(line.lstrip())]
            body = []
            while lines[position].strip() != '"""':
                body.append(lines[position].removeprefix(indent))
                position += 1
            position += 1
            outlines[-1].docstrings.append("\n".join(body))
        elif stripped.startswith("Then the attributes are"):
            table = outlines[-1].attributes
        elif stripped.startswith("Examples"):
            table = outlines[-1].examples
        elif stripped.startswith("|") and table is not None:
            table.append([cell.strip() for cell in stripped.strip("|").split("|")])
        elif stripped and not stripped.startswith("|"):
            table = None

    scenarios = []
    for outline in outlines:
        header, *rows = outline.examples
        for row in rows:
            values = dict(zip(header, row, strict=True))

            def fill(template: str, values: dict[str, str] = values) -> str:
                return re.sub(r"<(\w+)>", lambda m: values[m.group(1)], template)

            request, data = outline.docstrings
            scenarios.append(
                Scenario(
                    name=fill(outline.name),
                    request=fill(request),
                    attributes={
                        key: fill(value) for key, value in outline.attributes[1:]
                    },
                    data=data,
                )
            )
    return scenarios


def parse_http_request(raw: str) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """Split a raw HTTP/1.1 request into method, path, headers and body."""
    head, _, body = raw.partition("\n\n")
    request_line, *header_lines = head.splitlines()
    method, path, _version = request_line.split(" ")
    headers = []
    for header_line in header_lines:
        name, _, value = header_line.partition(":")
        headers.append((name.strip(), value.strip()))
    return method, path, headers, body.encode("utf-8")


def _scenarios() -> list[Any]:
    # Parametrisation runs before fixtures exist, so `samples_dir` is not usable.
    scenarios = parse_feature((samples_root() / FEATURE).read_text("utf-8"))
    return [pytest.param(scenario, id=scenario.name) for scenario in scenarios]


def test_parse_feature_expands_every_example() -> None:
    names = [param.id for param in _scenarios()]

    assert names == [
        "Binary content mode (application/json)",
        "Binary content mode (application/json; charset=utf-8)",
        "Structured content mode (application/cloudevents+json)",
        "Structured content mode (application/cloudevents+json; charset=utf-8)",
    ]


@pytest.mark.parametrize("scenario", _scenarios())
async def test_http_binding_scenario_ingests_expected_event(
    scenario: Scenario, open_client: httpx.AsyncClient, event_log: ReadableLog
) -> None:
    method, _path, headers, body = parse_http_request(scenario.request)
    event_headers = [
        (name, value)
        for name, value in headers
        if name.lower() not in TRANSPORT_HEADERS
    ]

    # The feature posts to a placeholder path; plantbus takes events at /v1/events.
    response = await open_client.request(
        method, "/v1/events", headers=event_headers, content=body
    )

    assert response.status_code == 202, response.text
    stored = await read_all(event_log)
    assert len(stored) == 1
    attributes = stored[0].event.to_dict()
    for key, expected in scenario.attributes.items():
        assert attributes[key] == expected, key
    assert stored[0].event.data == orjson.loads(scenario.data)
