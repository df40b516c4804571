"""The CloudEvents 1.0 HTTP protocol binding: turn a request into event documents.

A request carries events in one of three content modes, distinguished by its
Content-Type:

- structured: `application/cloudevents+json`, the body is one event in the
  CloudEvents JSON format;
- batched: `application/cloudevents-batch+json`, the body is a JSON array of
  such events;
- binary: any other media type with `ce-*` headers; each header is one
  attribute, the body is the event's data and Content-Type becomes
  `datacontenttype`.

Decoding only reads the request. Checking the envelope and the data happens
afterwards, on the documents this module returns.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from plantbus.api.problems import (
    MALFORMED_BODY,
    MALFORMED_JSON,
    UNSUPPORTED_MEDIA_TYPE,
    HttpProblem,
)
from plantbus.errors import Violation

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
HEADER_PREFIX = "ce-"
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


@dataclass(slots=True)
class DecodedRequest:
    """The events of one request, still as unchecked CloudEvents JSON documents."""

    batch: bool
    documents: list[Any]
    # Binary-mode data that is neither JSON nor text; it becomes `data_binary`.
    binary_data: bytes | None = None
    # Rules of the binding itself that the request broke, such as a header
    # value with invalid percent-encoding. They belong to the first document.
    violations: list[Violation] = field(default_factory=list)


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into its lower-case media type and parameters."""
    media_type, _, rest = value.partition(";")
    parameters = {}
    for part in rest.split(";"):
        name, separator, parameter = part.partition("=")
        if separator:
            parameters[name.strip().lower()] = parameter.strip().strip('"')
    return media_type.strip().lower(), parameters


def decode_request(
    content_type: str | None, headers: Iterable[tuple[str, str]], body: bytes
) -> DecodedRequest:
    """Read the events of a request in structured, batched or binary mode.

    Raises HttpProblem with status 415 for a media type that carries no
    CloudEvents and 400 for a body that is not valid JSON or text.
    """
    media_type, parameters = parse_media_type(content_type or "")
    if media_type in (STRUCTURED, BATCH):
        document = _json(body, parameters.get("charset"), "request body")
        if media_type == STRUCTURED:
            return DecodedRequest(batch=False, documents=[document])
        if not isinstance(document, list):
            violation = Violation(
                "$",
                type(document).__name__,
                f"a `{BATCH}` body must be a JSON array of events",
            )
            return DecodedRequest(batch=True, documents=[], violations=[violation])
        return DecodedRequest(batch=True, documents=document)

    if media_type.startswith("application/cloudevents"):
        raise HttpProblem(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            f"Content-Type {content_type!r} is a CloudEvents format that plantbus "
            f"does not read. Send `{STRUCTURED}`, `{BATCH}` or binary mode.",
        )

    ce_headers = [
        (name.lower(), value)
        for name, value in headers
        if name.lower().startswith(HEADER_PREFIX)
    ]
    if not ce_headers:
        raise HttpProblem(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            f"Content-Type {content_type!r} carries no CloudEvent and the request "
            f"has no `ce-` headers. Send the event as `{STRUCTURED}`, a batch as "
            f"`{BATCH}`, or the data with `ce-specversion`, `ce-id`, `ce-source` "
            f"and `ce-type` headers (binary mode).",
        )
    return _decode_binary(content_type, media_type, parameters, ce_headers, body)


def _decode_binary(
    content_type: str | None,
    media_type: str,
    parameters: dict[str, str],
    ce_headers: list[tuple[str, str]],
    body: bytes,
) -> DecodedRequest:
    document: dict[str, Any] = {}
    violations: list[Violation] = []
    for name, raw in ce_headers:
        attribute = name[len(HEADER_PREFIX) :]
        if attribute == "datacontenttype":
            violations.append(
                Violation(
                    name,
                    raw,
                    "binary mode sends the data's media type in the "
                    "Content-Type header, not in a `ce-` header",
                )
            )
            continue
        # The CloudEvents HTTP binding percent-encodes header values as UTF-8.
        try:
            document[attribute] = unquote(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            document[attribute] = raw
            violations.append(
                Violation(name, raw, "the percent-encoded value is not valid UTF-8")
            )
    if content_type:
        document["datacontenttype"] = content_type

    decoded = DecodedRequest(batch=False, documents=[document], violations=violations)
    if not body:
        return decoded

    charset = parameters.get("charset")
    if _is_json(media_type):
        document["data"] = _json(body, charset, "data")
    elif _is_text(media_type) or charset is not None:
        document["data"] = _decode_text(body, charset, "data")
    else:
        decoded.binary_data = body
    return decoded


def _is_json(media_type: str) -> bool:
    return media_type in ("application/json", "text/json") or media_type.endswith(
        "+json"
    )


def _is_text(media_type: str) -> bool:
    return (
        media_type.startswith("text/")
        or media_type == "application/xml"
        or media_type.endswith("+xml")
    )


def _decode_text(body: bytes, charset: str | None, what: str) -> str:
    name = charset or "utf-8"
    try:
        codecs.lookup(name)
    except LookupError as exc:
        raise HttpProblem(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            f"The charset {name!r} of the {what} is unknown. Send UTF-8.",
        ) from exc
    try:
        return body.decode(name)
    except UnicodeDecodeError as exc:
        raise HttpProblem(
            400,
            MALFORMED_BODY,
            "Malformed Request Body",
            f"The {what} is not valid {name} text at byte {exc.start}. Send it "
            f"in the charset that Content-Type names.",
        ) from exc


def _json(body: bytes, charset: str | None, what: str) -> Any:
    # orjson reads UTF-8 bytes itself and rejects invalid UTF-8 as malformed.
    text: bytes | str = body
    if charset is not None and charset.lower() not in _UTF8_NAMES:
        text = _decode_text(body, charset, what)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise HttpProblem(
            400,
            MALFORMED_JSON,
            "Malformed JSON",
            f"The {what} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno} (character {exc.pos}). Fix the JSON and send "
            f"the request again.",
        ) from exc
