"""The version, verb and noun of a B2MML document, and the XSD file for it.

The version comes from the root element's namespace and the noun from the root
element's name without its verb (`SyncMaterialInformation` is the noun
`MaterialInformation` with the verb `Sync`). A document whose namespace, noun
or verb plantbus does not map is rejected here with a sentence that names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from plantbus.errors import ConfigError, FormatError, FormatProblem
from plantbus.formats.b2mml.values import local_name

# B2MML namespaces by version. V0700 (ISA-95 2018) dropped the name version
# from its namespace.
NAMESPACES = {
    "http://www.wbf.org/xml/B2MML-V0401": "V0401",
    "http://www.mesa.org/xml/B2MML-V0600": "V0600",
    "http://www.mesa.org/xml/B2MML": "V0700",
}
# Namespaces that look like B2MML or BatchML of some version, for a clear
# message about a version that plantbus does not read.
_B2MML_LIKE = re.compile(r"^https?://www\.(wbf|mesa)\.org/xml/(B2MML|BatchML)\b")
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
# Verbs whose documents carry the state of their nouns; a bare noun does too.
MAPPED_VERBS = ("Change", "Process", "Respond", "Show", "Sync")
# The rejection reason for each verb whose documents map to no event.
_VERB_REASONS = {
    "Get": (
        "requests data from the receiver and carries none to map; plantbus "
        "responds to no B2MML Get requests, so send the Show or Sync document "
        "that carries the data"
    ),
    "Cancel": (
        "requests to cancel what it names; plantbus has no cancellation event for "
        "B2MML documents, and it rejects the document rather than read it as "
        "a new {kind}"
    ),
    "Acknowledge": (
        "is a receipt for a document sent earlier; plantbus maps the original "
        "Process or Sync document, and a receipt would repeat its events"
    ),
    "Confirm": (
        "is a receipt for a document sent earlier; plantbus maps the original "
        "Process or Sync document, and a receipt would repeat its events"
    ),
}
# Nouns that plantbus maps to events, by the stem of their XSD file name.
_MAPPED = {
    "ProductionSchedule": "ProductionSchedule",
    "ProductionPerformance": "ProductionPerformance",
    "MaterialInformation": "Material",
    "MaterialDefinition": "Material",
    "MaterialLot": "Material",
    "EquipmentInformation": "Equipment",
    "Equipment": "Equipment",
}
SUPPORTED_KINDS = tuple(_MAPPED)
# Versions whose XSD set has no file for a mapped noun.
_MISSING_IN_VERSION = {
    ("V0700", "ProductionSchedule"): "OperationsSchedule",
    ("V0700", "ProductionPerformance"): "OperationsPerformance",
}
# BatchML documents share the B2MML namespace but have their own XSD files.
BATCHML_KINDS = ("BatchInformation", "BatchProductionRecord", "GeneralRecipe")


@dataclass(frozen=True, slots=True)
class DocumentKind:
    """The B2MML version, noun and verb of a document."""

    namespace: str
    version: str
    kind: str
    verb: str | None

    @property
    def family(self) -> str:
        """Return 'BatchML' for batch documents and 'B2MML' for the rest."""
        return "BatchML" if self.kind in BATCHML_KINDS else "B2MML"


def detect_kind(root: etree._Element, source_name: str) -> DocumentKind:
    """Find the version, verb and noun of a document; reject those not mapped.

    BatchML nouns are returned, so that the reader can check them against
    their XSD before it rejects them.
    """
    namespace = etree.QName(root).namespace or ""
    name = local_name(root)
    if namespace not in NAMESPACES:
        raise FormatError(source_name, [_namespace_problem(root, namespace)])

    verb = next((v for v in VERBS if name.startswith(v) and name != v), None)
    kind = name[len(verb) :] if verb else name
    found = DocumentKind(
        namespace=namespace, version=NAMESPACES[namespace], kind=kind, verb=verb
    )
    if kind in BATCHML_KINDS:
        return found
    if kind not in _MAPPED or (found.version, kind) in _MISSING_IN_VERSION:
        raise FormatError(source_name, [_kind_problem(root, found)])
    if verb is not None and verb not in MAPPED_VERBS:
        raise FormatError(source_name, [_verb_problem(root, found, verb)])
    return found


def schema_file(schema_dir: Path, kind: DocumentKind) -> Path:
    """Return the XSD file for a document kind; raise ConfigError if missing."""
    names = _schema_names(kind)
    candidates = [
        folder / name
        for name in names
        for folder in (schema_dir / kind.version, schema_dir)
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"The B2MML schema folder {str(schema_dir)!r} has no {names[0]!r} "
        f"(looked for {', '.join(repr(str(c)) for c in candidates)}); copy "
        f"the official {kind.family} {kind.version} XSD files there or point "
        f"`schema_dir` at them."
    )


def _schema_names(kind: DocumentKind) -> list[str]:
    if kind.family == "BatchML":
        if kind.version == "V0401" and kind.kind == "BatchProductionRecord":
            # V0401 batch production records only exist as working drafts.
            return [
                f"BatchML-V0401WD01-{kind.kind}.xsd",
                f"BatchML-V0401xxxx-{kind.kind}.xsd",
            ]
        return [f"BatchML-{kind.version}-{kind.kind}.xsd"]
    prefix = "B2MML" if kind.version == "V0700" else f"B2MML-{kind.version}"
    return [f"{prefix}-{_MAPPED[kind.kind]}.xsd"]


def _line(root: etree._Element) -> int | None:
    return root.sourceline if isinstance(root.sourceline, int) else None


def _namespace_problem(root: etree._Element, namespace: str) -> FormatProblem:
    name = local_name(root)
    known = ", ".join(f"{version} ({uri!r})" for uri, version in NAMESPACES.items())
    if "BatchML" in namespace:
        message = (
            f"is a BatchML {name} document with the namespace {namespace!r}; "
            f"plantbus reads BatchML only in the B2MML namespaces {known}, has "
            f"no XSD for this BatchML version and maps no recipe to events"
        )
        rule = "supported B2MML version"
    elif _B2MML_LIKE.match(namespace):
        message = (
            f"has the namespace {namespace!r}, a B2MML or BatchML version that "
            f"plantbus does not read; plantbus reads the B2MML versions {known}, "
            f"so ask the sender for one of these versions"
        )
        rule = "supported B2MML version"
    else:
        message = (
            f"has the namespace {namespace!r}, which is not a B2MML namespace; "
            f"expected one of {known}"
        )
        rule = "B2MML namespace"
    return FormatProblem(
        f"/{name}",
        message,
        line=_line(root),
        details={"rule": rule, "value": namespace},
    )


def _kind_problem(root: etree._Element, kind: DocumentKind) -> FormatProblem:
    replacement = _MISSING_IN_VERSION.get((kind.version, kind.kind))
    if replacement is not None:
        message = (
            f"is a {kind.kind} document in the B2MML {kind.version} namespace, "
            f"but B2MML {kind.version} has no {kind.kind}: it was replaced by "
            f"{replacement}, which plantbus does not read yet; send the "
            f"document in the V0600 namespace"
        )
    else:
        message = (
            f"is a B2MML {kind.version} {kind.kind} document; plantbus does not "
            f"read this document kind (it reads {', '.join(SUPPORTED_KINDS)})"
        )
    return FormatProblem(
        f"/{local_name(root)}",
        message,
        line=_line(root),
        details={
            "rule": "supported document kind",
            "kind": kind.kind,
            "version": kind.version,
        },
    )


def _verb_problem(root: etree._Element, kind: DocumentKind, verb: str) -> FormatProblem:
    reason = _VERB_REASONS[verb].format(kind=kind.kind)
    return FormatProblem(
        f"/{local_name(root)}",
        f"is a B2MML {kind.version} {verb} {kind.kind} document, which {reason} "
        f"(plantbus maps documents with the verbs {', '.join(MAPPED_VERBS)} "
        f"or none)",
        line=_line(root),
        details={"rule": "mapped verb", "verb": verb, "kind": kind.kind},
    )
