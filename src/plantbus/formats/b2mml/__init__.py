"""ISA-95 B2MML documents in and out.

`parse_b2mml` validates a B2MML V0401, V0600 or V0700 document (production
schedule and performance, material information, material definitions and
lots, equipment) against the official XSD from a configured schema folder and
maps it to canonical events. The writers build V0600 documents that validate
against the same XSDs.

The Business To Manufacturing Markup Language (B2MML) is used courtesy of MESA
International.
"""

from plantbus.formats.b2mml.kinds import SUPPORTED_KINDS
from plantbus.formats.b2mml.reader import parse_b2mml
from plantbus.formats.b2mml.writer import (
    MaterialLine,
    write_production_performance,
    write_production_schedule,
)

__all__ = [
    "SUPPORTED_KINDS",
    "MaterialLine",
    "parse_b2mml",
    "write_production_performance",
    "write_production_schedule",
]
