"""The Sparkplug B protobuf schema, written as a FileDescriptorProto.

The message classes are built at import time from a FileDescriptorProto that
this module writes field by field, with the names, numbers and types of the
Eclipse Tahu `sparkplug_b.proto` (package `org.eclipse.tahu.protobuf`,
proto2). No generated code and no protoc are needed.
"""

from __future__ import annotations

# protobuf ships no type stubs, and types-protobuf is not a plantbus dependency.
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import Message  # type: ignore[import-untyped]

PACKAGE = "org.eclipse.tahu.protobuf"
# `extensions N to max` ends at 2**29, the largest field number plus one.
_MAX_FIELD = 536_870_912

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "bytes": _F.TYPE_BYTES,
}

# Sparkplug B DataType enum values by name, as in the .proto file.
DATA_TYPES: dict[str, int] = {
    "Unknown": 0,
    "Int8": 1,
    "Int16": 2,
    "Int32": 3,
    "Int64": 4,
    "UInt8": 5,
    "UInt16": 6,
    "UInt32": 7,
    "UInt64": 8,
    "Float": 9,
    "Double": 10,
    "Boolean": 11,
    "String": 12,
    "DateTime": 13,
    "Text": 14,
    "UUID": 15,
    "DataSet": 16,
    "Bytes": 17,
    "File": 18,
    "Template": 19,
    "PropertySet": 20,
    "PropertySetList": 21,
    "Int8Array": 22,
    "Int16Array": 23,
    "Int32Array": 24,
    "Int64Array": 25,
    "UInt8Array": 26,
    "UInt16Array": 27,
    "UInt32Array": 28,
    "UInt64Array": 29,
    "FloatArray": 30,
    "DoubleArray": 31,
    "BooleanArray": 32,
    "StringArray": 33,
    "DateTimeArray": 34,
}
DATA_TYPE_NAMES = {number: name for name, number in DATA_TYPES.items()}

# One field: (name, number, type, repeated). The type is a scalar name or the
# name of a message relative to the package, such as "Payload.Metric".
Field = tuple[str, int, str, bool]

# The six scalar members that start the `value` oneof of Parameter,
# DataSetValue, PropertyValue and Metric, in field number order.
SIMPLE_VALUES: tuple[tuple[str, str], ...] = (
    ("int_value", "uint32"),
    ("long_value", "uint64"),
    ("float_value", "float"),
    ("double_value", "double"),
    ("boolean_value", "bool"),
    ("string_value", "string"),
)


def _message(
    name: str,
    fields: list[Field],
    *,
    oneof: list[Field] | None = None,
    nested: list[descriptor_pb2.DescriptorProto] | None = None,
    extensions_from: int | None = None,
) -> descriptor_pb2.DescriptorProto:
    """Describe one proto2 message; `oneof` fields go into a oneof named `value`."""
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, repeated in fields:
        _add_field(message, field_name, number, kind, repeated)
    if oneof:
        message.oneof_decl.add(name="value")
        for field_name, number, kind, _ in oneof:
            added = _add_field(message, field_name, number, kind, False)
            added.oneof_index = 0
    message.nested_type.extend(nested or [])
    if extensions_from is not None:
        message.extension_range.add(start=extensions_from, end=_MAX_FIELD)
    return message


def _add_field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: str,
    repeated: bool,
) -> descriptor_pb2.FieldDescriptorProto:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    field = message.field.add(name=name, number=number, label=label)
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{kind}"
    return field


def _extension(name: str) -> descriptor_pb2.DescriptorProto:
    return _message(name, [], extensions_from=1)


def _value_message(
    path: str,
    fields: list[Field],
    *,
    first_value: int,
    extra_values: tuple[Field, ...] = (),
    extension: tuple[str, int],
) -> descriptor_pb2.DescriptorProto:
    """Describe a message with a `value` oneof and a nested extension message.

    The oneof contains the simple values numbered from `first_value`, then
    `extra_values`, then `extension_value` of the nested extension message.
    """
    extension_name, extension_number = extension
    simple_values = [
        (name, first_value + index, kind, False)
        for index, (name, kind) in enumerate(SIMPLE_VALUES)
    ]
    extension_field = (
        "extension_value",
        extension_number,
        f"{path}.{extension_name}",
        False,
    )
    return _message(
        path.rsplit(".", 1)[-1],
        fields,
        oneof=[*simple_values, *extra_values, extension_field],
        nested=[_extension(extension_name)],
    )


def build_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """Write the FileDescriptorProto of `sparkplug_b.proto`."""
    parameter = _value_message(
        "Payload.Template.Parameter",
        [("name", 1, "string", False), ("type", 2, "uint32", False)],
        first_value=3,
        extension=("ParameterValueExtension", 9),
    )
    template = _message(
        "Template",
        [
            ("version", 1, "string", False),
            ("metrics", 2, "Payload.Metric", True),
            ("parameters", 3, "Payload.Template.Parameter", True),
            ("template_ref", 4, "string", False),
            ("is_definition", 5, "bool", False),
        ],
        nested=[parameter],
        extensions_from=6,
    )
    dataset_value = _value_message(
        "Payload.DataSet.DataSetValue",
        [],
        first_value=1,
        extension=("DataSetValueExtension", 7),
    )
    row = _message(
        "Row",
        [("elements", 1, "Payload.DataSet.DataSetValue", True)],
        extensions_from=2,
    )
    dataset = _message(
        "DataSet",
        [
            ("num_of_columns", 1, "uint64", False),
            ("columns", 2, "string", True),
            ("types", 3, "uint32", True),
            ("rows", 4, "Payload.DataSet.Row", True),
        ],
        nested=[dataset_value, row],
        extensions_from=5,
    )
    property_value = _value_message(
        "Payload.PropertyValue",
        [("type", 1, "uint32", False), ("is_null", 2, "bool", False)],
        first_value=3,
        extra_values=(
            ("propertyset_value", 9, "Payload.PropertySet", False),
            ("propertysets_value", 10, "Payload.PropertySetList", False),
        ),
        extension=("PropertyValueExtension", 11),
    )
    property_set = _message(
        "PropertySet",
        [("keys", 1, "string", True), ("values", 2, "Payload.PropertyValue", True)],
        extensions_from=3,
    )
    property_set_list = _message(
        "PropertySetList",
        [("propertyset", 1, "Payload.PropertySet", True)],
        extensions_from=2,
    )
    metadata = _message(
        "MetaData",
        [
            ("is_multi_part", 1, "bool", False),
            ("content_type", 2, "string", False),
            ("size", 3, "uint64", False),
            ("seq", 4, "uint64", False),
            ("file_name", 5, "string", False),
            ("file_type", 6, "string", False),
            ("md5", 7, "string", False),
            ("description", 8, "string", False),
        ],
        extensions_from=9,
    )
    metric = _value_message(
        "Payload.Metric",
        [
            ("name", 1, "string", False),
            ("alias", 2, "uint64", False),
            ("timestamp", 3, "uint64", False),
            ("datatype", 4, "uint32", False),
            ("is_historical", 5, "bool", False),
            ("is_transient", 6, "bool", False),
            ("is_null", 7, "bool", False),
            ("metadata", 8, "Payload.MetaData", False),
            ("properties", 9, "Payload.PropertySet", False),
        ],
        first_value=10,
        extra_values=(
            ("bytes_value", 16, "bytes", False),
            ("dataset_value", 17, "Payload.DataSet", False),
            ("template_value", 18, "Payload.Template", False),
        ),
        extension=("MetricValueExtension", 19),
    )
    payload = _message(
        "Payload",
        [
            ("timestamp", 1, "uint64", False),
            ("metrics", 2, "Payload.Metric", True),
            ("seq", 3, "uint64", False),
            ("uuid", 4, "string", False),
            ("body", 5, "bytes", False),
        ],
        nested=[
            template,
            dataset,
            property_value,
            property_set,
            property_set_list,
            metadata,
            metric,
        ],
        extensions_from=6,
    )

    proto = descriptor_pb2.FileDescriptorProto(
        name="plantbus/sparkplug_b.proto", package=PACKAGE, syntax="proto2"
    )
    data_type = proto.enum_type.add(name="DataType")
    for name, number in DATA_TYPES.items():
        data_type.value.add(name=name, number=number)
    proto.message_type.append(payload)
    return proto


def _payload_class() -> type[Message]:
    # A private pool keeps these names apart from any other copy of the schema
    # that the process may load, such as generated Tahu code.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(build_file_descriptor())
    descriptor = pool.FindMessageTypeByName(f"{PACKAGE}.Payload")
    payload_class: type[Message] = message_factory.GetMessageClass(descriptor)
    return payload_class


Payload = _payload_class()
