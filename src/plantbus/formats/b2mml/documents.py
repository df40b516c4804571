"""Reading a B2MML document safely and validating it against the official XSD.

The XSD files come from a schema folder that the user configures: either the
folder of one version (`.../V0600`) or a folder with one subfolder per version
(`V0401/`, `V0600/`, `V0700/`). The schema is picked by the document's
namespace (the B2MML version) and its root element (the document kind).
Compiling a B2MML schema takes most of a second, so each schema file is
compiled once per process, on first use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import xmlschema
from lxml import etree

from plantbus.errors import ConfigError, FormatError, FormatProblem
from plantbus.formats.b2mml.values import element_path, local_name

# B2MML namespaces by version. V0700 (ISA-95 2018) has no ProductionSchedule
# or ProductionPerformance; its Operations* documents replace them.
NAMESPACES = {
    "http://www.wbf.org/xml/B2MML-V0401": "V0401",
    "http://www.mesa.org/xml/B2MML-V0600": "V0600",
    "http://www.mesa.org/xml/B2MML": "V0700",
}
# Namespaces of related standards that plantbus recognises but cannot read.
OTHER_NAMESPACES = {
    "http://www.wbf.org/xml/BatchML-V02": "BatchML V02",
}
# Verbs that B2MML transaction documents put before the noun, e.g.
# ProcessProductionSchedule or SyncProductionPerformance.
VERBS = (
    "Acknowledge",
    "Cancel",
    "Change",
    "Confirm",
    "Get",
    "Process",
    "Respond",
    "Show",
    "Sync",
)
SUPPORTED_KINDS = ("ProductionPerformance", "ProductionSchedule")
# BatchML documents share the B2MML namespace but have their own schema files.
_BATCHML_KINDS = ("BatchInformation", "BatchProductionRecord", "GeneralRecipe")

_schemas: dict[Path, xmlschema.XMLSchema10] = {}
_schemas_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class DocumentKind:
    """What a document is: its B2MML version, noun and verb."""

    namespace: str
    version: str
    kind: str
    verb: str | None


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


def detect_kind(root: etree._Element, source_name: str) -> DocumentKind:
    """Find the version and kind of a document; reject kinds not read yet."""
    namespace = etree.QName(root).namespace or ""
    name = local_name(root)
    line = root.sourceline if isinstance(root.sourceline, int) else None
    if namespace in OTHER_NAMESPACES:
        standard = OTHER_NAMESPACES[namespace]
        raise FormatError(
            source_name,
            [
                FormatProblem(
                    f"/{name}",
                    f"is a {standard} document (namespace {namespace!r}); "
                    f"{standard} documents are not supported yet",
                    line=line,
                    details={
                        "rule": "supported document kind",
                        "kind": name,
                        "namespace": namespace,
                    },
                )
            ],
        )
    if namespace not in NAMESPACES:
        known = ", ".join(repr(uri) for uri in NAMESPACES)
        raise FormatError(
            source_name,
            [
                FormatProblem(
                    f"/{name}",
                    f"has the namespace {namespace!r}, which is not a B2MML "
                    f"namespace; expected one of {known}",
                    line=line,
                    details={"rule": "B2MML namespace", "value": namespace},
                )
            ],
        )

    version = NAMESPACES[namespace]
    verb = next((v for v in VERBS if name.startswith(v) and name != v), None)
    kind = name[len(verb) :] if verb else name
    if kind not in SUPPORTED_KINDS:
        family = "BatchML" if kind in _BATCHML_KINDS else "B2MML"
        raise FormatError(
            source_name,
            [
                FormatProblem(
                    f"/{name}",
                    f"is a {family} {version} {kind} document; this document "
                    f"kind is not supported yet (plantbus reads "
                    f"{' and '.join(SUPPORTED_KINDS)} documents)",
                    line=line,
                    details={
                        "rule": "supported document kind",
                        "kind": kind,
                        "version": version,
                    },
                )
            ],
        )
    return DocumentKind(namespace=namespace, version=version, kind=kind, verb=verb)


def schema_file(schema_dir: Path, kind: DocumentKind) -> Path:
    """Return the XSD file for a document kind; raise ConfigError if missing."""
    prefix = "B2MML" if kind.version == "V0700" else f"B2MML-{kind.version}"
    name = f"{prefix}-{kind.kind}.xsd"
    candidates = (schema_dir / kind.version / name, schema_dir / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"The B2MML schema folder {str(schema_dir)!r} has no {name!r} (looked for "
        f"{', '.join(repr(str(c)) for c in candidates)}); copy the official "
        f"B2MML {kind.version} XSD files there or point `schema_dir` at them."
    )


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
    problems = []
    for error in schema.iter_errors(resource):
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
    return f"breaks the XSD rule: {reason}"
