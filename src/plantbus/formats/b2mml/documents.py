"""Reading a B2MML document safely and validating it against the official XSD.

The XSD files come from a schema folder that the user configures: either the
folder of one version (`.../V0600`) or a folder with one subfolder per version
(`V0401/`, `V0600/`, `V0700/`); `kinds.schema_file` picks the file.
Compiling a B2MML schema takes most of a second, so each schema file is
compiled once per process, on first use.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import xmlschema
from lxml import etree

from plantbus.errors import FormatError, FormatProblem
from plantbus.formats.b2mml.values import element_path

# A namespace in Clark notation inside an xmlschema message.
_QUALIFIED = re.compile(r"\{[^{}\s]*\}(?=[A-Za-z_])")

# An XSD that refers to a type it does not define (a defect of the XSD).
_MISSING_COMPONENT = re.compile(r"global component '([^']+)' not found")

# A date or date-time whose year has more than four digits.
_LONG_YEAR = re.compile(r"^-?\d{5,}-\d{2}-\d{2}")

_schemas: dict[Path, xmlschema.XMLSchema10] = {}
_schemas_lock = threading.Lock()


def read_xml(data: bytes, source_name: str) -> etree._ElementTree:
    """Parse XML bytes without DTDs, entity expansion or network access."""
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )
    try:
        tree = etree.ElementTree(etree.fromstring(data, parser))
    except etree.XMLSyntaxError as exc:
        raise FormatError(
            source_name,
            [
                FormatProblem(
                    "/",
                    f"is not well-formed XML: {exc.msg}",
                    line=exc.lineno or None,
                    details={"rule": "well-formed"},
                )
            ],
        ) from exc

    # B2MML never uses a DTD; one here can only mean entity tricks.
    if tree.docinfo.doctype:
        raise FormatError(
            source_name,
            [
                FormatProblem(
                    "/",
                    f"contains a DOCTYPE declaration "
                    f"{tree.docinfo.doctype!r}; B2MML documents must "
                    f"not declare a DTD, remove it",
                    line=1,
                    details={"rule": "no DTD"},
                )
            ],
        )
    return tree


def compiled_schema(path: Path) -> xmlschema.XMLSchema10:
    """Return the compiled schema of an XSD file, compiling it on first use."""
    with _schemas_lock:
        schema = _schemas.get(path)
        if schema is None:
            # The sandbox keeps imports and includes inside the schema's own
            # folder and `defuse` parses the XSD files without entity expansion.
            schema = xmlschema.XMLSchema10(str(path), allow="sandbox", defuse="always")
            _schemas[path] = schema
        return schema


def validate(
    tree: etree._ElementTree, schema: xmlschema.XMLSchema10
) -> list[FormatProblem]:
    """Validate a parsed document and describe each error by path, line and rule."""
    # allow="none": the document's xsi:schemaLocation hints are never followed.
    # xmlschema reads lxml trees, though its annotations name only ElementTree.
    resource = xmlschema.XMLResource(
        tree,  # type: ignore[arg-type]
        allow="none",
        defuse="always",
    )
    try:
        errors = list(schema.iter_errors(resource))
    except OverflowError:
        # xmlschema 4.3.2 raises this for a year past 9999 in an xs:dateTime.
        return [_overflow_problem(tree)]
    problems = []
    for error in errors:
        element = error.elem if isinstance(error.elem, etree._Element) else None
        value = _offending_value(error.obj)
        rule = _rule(error)
        problems.append(
            FormatProblem(
                location=element_path(element)
                if element is not None
                else str(error.path or "/"),
                message=f"{value!r} {rule}" if value is not None else rule,
                line=element.sourceline if element is not None else None,
                details={"value": value, "rule": rule, "schema": "xsd"},
            )
        )
    return problems


def _overflow_problem(tree: etree._ElementTree) -> FormatProblem:
    """Describe the first date whose year has more than four digits."""
    rule = (
        "is a date outside the years 1 to 9999 that plantbus can read; correct the year"
    )
    for element in tree.getroot().iter("{*}*"):
        text = (element.text or "").strip()
        if _LONG_YEAR.match(text):
            line = element.sourceline if isinstance(element.sourceline, int) else None
            return FormatProblem(
                location=element_path(element),
                message=f"{text!r} {rule}",
                line=line,
                details={"value": text, "rule": rule, "schema": "xsd"},
            )
    return FormatProblem(
        location="/",
        message=f"contains a date that {rule.removeprefix('is ')}",
        details={"rule": rule, "schema": "xsd"},
    )


def _offending_value(obj: object) -> str | None:
    if isinstance(obj, str):
        return obj
    return None


def _rule(error: xmlschema.XMLSchemaValidationError) -> str:
    """Describe an XSD error as the rule that the document broke."""
    validator = error.validator
    # Built-in types report a Python class name; name the XSD type instead.
    if isinstance(validator, xmlschema.validators.XsdAtomicBuiltin):
        type_name = etree.QName(validator.name).localname if validator.name else "?"
        return f"is not a valid xs:{type_name} value (XSD)"
    reason = (error.reason or error.message).rstrip(".")
    # The document's own namespace is known from the root; element names
    # read better without it ('{http://www.mesa.org/xml/B2MML-V0600}ID').
    reason = _QUALIFIED.sub("", reason)
    missing = _MISSING_COMPONENT.search(reason)
    if missing is not None:
        return (
            f"cannot be checked: the XSD refers to {missing.group(1)!r}, which "
            f"no file of the schema set defines, so the XSD itself is "
            f"incomplete here"
        )
    if isinstance(error, xmlschema.XMLSchemaChildrenValidationError):
        reason += _allowed_children(error, reason)
    return f"breaks the XSD rule: {reason}"


def _allowed_children(
    error: xmlschema.XMLSchemaChildrenValidationError, reason: str
) -> str:
    """Name the children that the XSD allows where xmlschema names none."""
    # "Unexpected child ... Tag 'X' expected" already names the allowed tag.
    if reason.endswith(" expected") or not isinstance(
        error.validator, xmlschema.validators.XsdGroup
    ):
        return ""
    names = [
        child.local_name
        for child in error.validator.iter_elements()
        if isinstance(child, xmlschema.validators.XsdElement) and child.local_name
    ]
    if not names:
        return ""
    return f"; the XSD allows these children, in this order: {', '.join(names)}"
