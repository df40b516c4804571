"""A supplier portal: suppliers drop ASNs, and pick up the acknowledgements.

Suppliers send advance shipping notices (ASNs) as JSON, or upload the ASN
document as it is (an EDIFACT DESADV, a DESADV XML or a CSV). The buyer's side
reads what arrived and posts one acknowledgement per ASN, which the supplier
then lists and marks as picked up.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from plantbus.sim.refservers.base import RefServer
from plantbus.sim.refservers.models import Body, Code, Quantity, Stored
from plantbus.sim.refservers.problems import Problem, record_not_found
from plantbus.sim.refservers.records import Collection, KeyReused, asn_key

# Largest ASN document that the upload accepts, in bytes.
MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
DOCUMENT_TYPES = (
    "application/EDIFACT",
    "application/xml",
    "text/xml",
    "text/csv",
    "application/json",
)


class AsnLine(Body):
    """One shipped line: item, quantity and lot."""

    line_number: Annotated[int, Field(ge=1)]
    item: Code
    quantity: Quantity
    lot: Code | None = None
    purchase_order: Code | None = None


class AsnIn(Body):
    """An advance shipping notice sent as JSON."""

    asn_number: Code
    supplier_id: Code
    shipped_at: AwareDatetime
    expected_at: AwareDatetime
    lines: Annotated[list[AsnLine], Field(min_length=1, max_length=999)]

    @model_validator(mode="after")
    def _arrives_after_shipping(self) -> AsnIn:
        if self.expected_at < self.shipped_at:
            raise ValueError(
                f"expected_at {self.expected_at.isoformat()} is before shipped_at "
                f"{self.shipped_at.isoformat()}: a delivery arrives after it ships"
            )
        return self


class Asn(AsnIn, Stored):
    """A stored ASN."""


class AsnDocument(Stored):
    """An uploaded ASN document: its name, type, size and SHA-256."""

    supplier_id: str
    filename: str
    content_type: str
    size: int
    sha256: str


class AcknowledgementIn(Body):
    """The buyer's reply to one ASN."""

    asn_number: Code
    supplier_id: Code
    decision: Literal["accepted", "accepted_with_changes", "rejected"]
    reason: Annotated[str, Field(max_length=1000)] | None = None
    acknowledged_at: AwareDatetime

    @model_validator(mode="after")
    def _reason_when_not_accepted(self) -> AcknowledgementIn:
        if self.decision != "accepted" and not self.reason:
            raise ValueError(
                f"field `reason` is required when decision is {self.decision!r}"
            )
        return self


class Acknowledgement(AcknowledgementIn, Stored):
    """A stored acknowledgement, pending until the supplier picks it up."""

    picked_up_at: AwareDatetime | None = None


class SupplierPortal:
    """The portal's own endpoints beside the generic record endpoints."""

    def __init__(self, server: RefServer) -> None:
        self.server = server
        self.documents = Collection("asn-document", "DOC", status="received")
        # Record id -> the uploaded bytes.
        self.contents: dict[str, bytes] = {}
        self.acknowledgements = Collection(
            "acknowledgement", "ACK", status="pending", business_key=asn_key
        )

    def install(self) -> None:
        """Add the upload, download and pick-up endpoints."""
        router = self.server.router
        self.server.collections[self.documents.name] = self.documents
        router.add_api_route(
            "/asn-documents/{filename}",
            self.upload,
            methods=["PUT"],
            status_code=201,
            response_model=AsnDocument,
            tags=["asn documents"],
        )
        router.add_api_route(
            "/asn-documents/{record_id}/content",
            self.download,
            methods=["GET"],
            tags=["asn documents"],
            response_class=Response,
        )
        router.add_api_route(
            "/acknowledgements/{record_id}/pickup",
            self.pick_up,
            methods=["POST"],
            response_model=Acknowledgement,
            tags=["acknowledgements"],
        )

    async def upload(
        self,
        request: Request,
        filename: Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,128}$")],
        supplier_id: Annotated[str, Query(min_length=1, max_length=64)],
        content_type: Annotated[str, Header()] = "application/octet-stream",
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> AsnDocument:
        """Upload an ASN document as the raw request body."""
        media_type = content_type.split(";")[0].strip()
        if media_type.lower() not in (kind.lower() for kind in DOCUMENT_TYPES):
            raise Problem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                f"Content-Type {media_type!r} is not an ASN document type; send "
                f"one of {', '.join(DOCUMENT_TYPES)}.",
            )
        content = await request.body()
        if not content or len(content) > MAX_DOCUMENT_BYTES:
            raise Problem(
                413 if content else 422,
                "invalid-document-size",
                "Invalid document size",
                f"The document has {len(content)} bytes: expected 1 to "
                f"{MAX_DOCUMENT_BYTES} bytes.",
            )

        metadata = {
            "supplier_id": supplier_id,
            "filename": filename,
            "content_type": media_type,
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        try:
            record, created = self.documents.create(metadata, idempotency_key)
        except KeyReused as exc:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                f"Idempotency-Key {idempotency_key!r} was first sent with a "
                "different document; send a new key for a different upload.",
            ) from exc
        if created:
            self.contents[record["id"]] = content
        return AsnDocument.model_validate(record)

    async def download(self, record_id: str) -> Response:
        """Return an uploaded document as it was sent."""
        record = self.documents.records.get(record_id)
        if record is None:
            raise record_not_found("ASN document", record_id)
        return Response(self.contents[record_id], media_type=record["content_type"])

    async def pick_up(self, record_id: str) -> BaseModel:
        """Mark an acknowledgement as picked up. Repeating it changes nothing."""
        record = self.acknowledgements.records.get(record_id)
        if record is None:
            raise record_not_found("acknowledgement", record_id)
        if record["status"] == "pending":
            record["status"] = "picked_up"
            record["picked_up_at"] = datetime.now(UTC).isoformat(
                timespec="milliseconds"
            )
        return Acknowledgement.model_validate(record)


def build(**options: Any) -> RefServer:
    """Build the supplier portal reference server, passing `options` to RefServer."""
    server = RefServer(
        "supplier-portal", "Reference supplier portal", api_prefix="/api", **options
    )
    portal = SupplierPortal(server)
    server.add_collection(
        "/asns",
        Collection("asn", "ASN", status="received", business_key=asn_key),
        AsnIn,
        Asn,
        tag="asns",
        filters=("supplier_id", "asn_number", "status"),
    )
    portal.install()
    server.add_collection(
        "/asn-documents",
        portal.documents,
        AsnDocument,
        AsnDocument,
        tag="asn documents",
        filters=("supplier_id", "filename"),
        creatable=False,
    )
    server.add_collection(
        "/acknowledgements",
        portal.acknowledgements,
        AcknowledgementIn,
        Acknowledgement,
        tag="acknowledgements",
        filters=("supplier_id", "asn_number", "status"),
    )
    return server.ready()
