"""Field types that several reference servers share."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

# A decimal number as a string, such as "12.5", as plantbus events carry it.
DecimalString = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$")]


def _positive(value: str) -> str:
    if Decimal(value) <= 0:
        raise ValueError("must be greater than 0")
    return value


PositiveDecimalString = Annotated[DecimalString, AfterValidator(_positive)]
Code = Annotated[str, Field(min_length=1, max_length=64)]


class Body(BaseModel):
    """A request body that rejects unknown fields, as strict SaaS APIs do."""

    model_config = ConfigDict(extra="forbid")


class Quantity(Body):
    """A quantity with its unit of measure, such as 12.5 kg."""

    value: PositiveDecimalString
    unit: Annotated[str, Field(min_length=1, max_length=16)]


class Stored(BaseModel):
    """The fields that the server adds to every record it stores."""

    id: str
    status: str
    created_at: AwareDatetime
