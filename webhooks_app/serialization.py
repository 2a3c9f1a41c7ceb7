"""Model instances to payload data, and payloads to the exact bytes we send.

The body is compact JSON that is byte-for-byte what JavaScript's
``JSON.stringify(JSON.parse(body))`` gives back, because many receivers verify the signature
over that re-serialisation instead of the raw bytes. Python's ``json`` differs from JavaScript
only in numbers, so numbers are written here the way JavaScript writes them:

* integral floats lose their ``.0`` (JavaScript has no such distinction);
* other floats use JavaScript's shortest round-trip form (``1e+21``, ``5e-7``, ``0.00005``);
* NaN and infinities become ``null`` (JSON cannot carry them; JavaScript does the same);
* integers beyond ±(2**53 - 1) become strings, because JavaScript would round them.

Values JSON lacks are encoded predictably: Decimal and UUID as strings, datetimes as ISO 8601
(UTC with ``Z`` when aware), dates and times as ISO 8601, durations as ISO 8601 durations,
files as their stored name (``null`` when empty), bytes as base64.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import models
from django.db.models.fields.files import FieldFile
from django.utils.duration import duration_iso_string
from django.utils.functional import Promise
from django.utils.module_loading import import_string

MAX_SAFE_INTEGER = 2**53 - 1
_encode_string: Callable[[str], str] = json.encoder.encode_basestring
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ARRAY_INDEX = re.compile(r"^(?:0|[1-9][0-9]*)\Z")


class UnserializableValue(TypeError):
    """A value in a payload has a type we do not know how to encode."""


def _encode_datetime(value: datetime.datetime) -> str:
    if value.tzinfo is not None:
        text = value.astimezone(datetime.UTC).isoformat()
        return text.removesuffix("+00:00") + "Z"
    return value.isoformat()


# The model field values a payload meets most, by exact type: one lookup instead of the
# chain of isinstance() tests below (a watched save encodes several such values; subclasses
# still take the chain, which knows what they mean).
_BY_EXACT_TYPE: dict[type, Callable[[Any], Any]] = {
    datetime.datetime: _encode_datetime,
    datetime.date: datetime.date.isoformat,
    datetime.time: datetime.time.isoformat,
    decimal.Decimal: str,
    uuid.UUID: str,
}


def encode_value(value: Any) -> Any:
    """Turn one value into plain JSON types (dict, list, str, int, float, bool, None)."""
    encoder = _BY_EXACT_TYPE.get(type(value))
    if encoder is not None:
        return encoder(value)
    if isinstance(value, enum.Enum):
        # Before the primitives: an IntEnum member is an int that would print as "P.HIGH".
        return encode_value(value.value)
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): encode_value(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        try:
            items = sorted(value)
        except TypeError:  # mixed types: any stable order will do
            items = sorted(value, key=repr)
        return [encode_value(item) for item in items]
    if isinstance(value, (list, tuple)):
        return [encode_value(item) for item in value]
    if isinstance(value, datetime.datetime):
        return _encode_datetime(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, FieldFile):
        return value.name or None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Promise):
        return str(value)
    if isinstance(value, models.Model):
        return encode_value(value.pk)
    raise UnserializableValue(f"cannot encode {type(value).__name__} in a webhook payload")


def js_number(value: float) -> str:
    """A float written as JavaScript's ``Number.prototype.toString`` writes it."""
    if math.isnan(value) or math.isinf(value):
        return "null"
    if value == 0:
        return "0"
    # repr gives the shortest digits that round-trip, as ECMAScript requires; only the layout
    # (where the point goes, when to switch to an exponent) differs, so re-lay those digits.
    significand, _, exponent_text = repr(abs(value)).partition("e")
    whole, _, fraction = significand.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent_text or 0)  # ECMAScript's n
    leading_zeros = len(digits) - len(digits.lstrip("0"))
    digits = digits[leading_zeros:].rstrip("0")
    point -= leading_zeros
    count = len(digits)  # ECMAScript's k
    sign = "-" if value < 0 else ""
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    head = digits[0] + ("." + digits[1:] if count > 1 else "")
    return f"{sign}{head}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _json_string(text: str) -> str:
    encoded = _encode_string(text)
    # JavaScript escapes a lone surrogate; Python would write it raw (and fail to encode it).
    if _LONE_SURROGATE.search(encoded):
        encoded = _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", encoded)
    return encoded


def _is_array_index(key: str) -> bool:
    return key[:1].isdigit() and bool(_ARRAY_INDEX.match(key)) and int(key) < 2**32 - 1


def _js_key_order(mapping: dict[Any, Any]) -> list[tuple[str, Any]]:
    """Keys in the order JavaScript keeps them: array indexes ("0", "17") first, ascending,
    then the others in insertion order. Receivers that verify over ``JSON.stringify`` of the
    parsed body would otherwise see other bytes."""
    items = [(str(key), item) for key, item in mapping.items()]
    if not any(_is_array_index(key) for key, _ in items):
        return items
    indexes = sorted((item for item in items if _is_array_index(item[0])), key=lambda i: int(i[0]))
    return indexes + [item for item in items if not _is_array_index(item[0])]


def _write(value: Any, out: list[str]) -> None:
    # Exact types first: a subclass (IntEnum, an OrderedDict, a str subclass) goes through
    # encode_value, which knows what it means.
    kind = type(value)
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is str:
        out.append(_json_string(value))
    elif kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            out.append(str(value))
        else:
            out.append(_json_string(str(value)))
    elif kind is float:
        out.append(js_number(value))
    elif kind is dict:
        out.append("{")
        first = True
        for key, item in _js_key_order(value):
            if not first:
                out.append(",")
            first = False
            out.append(_json_string(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif kind is list:
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        _write(_plain(encode_value(value)), out)


def _plain(value: Any) -> Any:
    """encode_value returns subclasses of the plain types as they are (a SafeString is a
    str, an IntEnum's value may be an int subclass): the plain type they stand for."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def dumps(payload: Any) -> str:
    """Compact JSON that survives a JavaScript parse/stringify round trip unchanged."""
    plain = _plain_form(payload)
    if plain is not _CAREFUL:
        # The common payload (strings, small integers, booleans, nulls, floats both languages
        # write alike, objects with non-numeric keys): Python's C encoder writes exactly what
        # JavaScript would, in a fifth of the time. Anything else (other floats, big integers,
        # other types, index-like keys) takes the careful path below.
        text = _plain_json(plain)
        if text.isascii() or not _LONE_SURROGATE.search(text):
            return text
    out: list[str] = []
    _write(payload, out)
    return "".join(out)


_plain_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode
_CAREFUL: Any = object()
_WRITTEN_ALIKE = frozenset({type(None), bool, str})


def _plain_form(value: Any) -> Any:
    """``value`` as Python's encoder would write it the JavaScript way, or ``_CAREFUL``.

    Floats: an integral one up to 2**53 is written as the integer JavaScript prints (``0``,
    not ``0.0``; every digit counts there); a fraction with 1e-4 <= |x| has the same shortest
    round-trip digits in fixed notation in both languages. The rest (big integral floats,
    whose digits JavaScript pads with zeros, exponents, NaN) need ``js_number``."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else _CAREFUL
    if kind is float:
        size = abs(value)
        if value.is_integer():
            return int(value) if size <= MAX_SAFE_INTEGER else _CAREFUL
        return value if 1e-4 <= size < 1e16 else _CAREFUL
    # A container is copied only if one of its items has to change (an integral float):
    # payloads are almost always written as they are.
    if kind is dict:
        result = None
        for key, item in value.items():
            if type(key) is not str or key[:1].isdigit():
                return _CAREFUL
            item_kind = type(item)
            if item_kind in _WRITTEN_ALIKE:  # most fields: no call
                continue
            if item_kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            plain = _plain_form(item)
            if plain is _CAREFUL:
                return _CAREFUL
            if plain is not item:
                if result is None:
                    result = dict(value)
                result[key] = plain
        return value if result is None else result
    if kind is list:
        items = None
        for index, item in enumerate(value):
            plain = _plain_form(item)
            if plain is _CAREFUL:
                return _CAREFUL
            if plain is not item:
                if items is None:
                    items = list(value)
                items[index] = plain
        return value if items is None else items
    return _CAREFUL


def instance_data(instance: models.Model, field_names: Sequence[str]) -> dict[str, Any]:
    """The named concrete fields of an instance; a foreign key as the related primary key."""
    return _data(_fields_of(type(instance), tuple(field_names)), instance.__dict__, instance)


def values_data(
    model: type[models.Model],
    field_names: Sequence[str],
    values: Mapping[str, Any],
    now: tuple[models.Model, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``instance_data`` of the values an instance had, by attribute name (a snapshot).

    ``now``: the instance and its ``instance_data`` for the same fields; a value that is
    still the very object the instance holds is taken from that data, not encoded again."""
    return _data(_fields_of(model, tuple(field_names)), values, None, now)


def _data(
    fields: list[tuple[str, str, frozenset[type], Callable[[Any], Any]]],
    values: Mapping[str, Any],
    instance: models.Model | None,
    now: tuple[models.Model, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    data = {}
    current: Mapping[str, Any] = now[0].__dict__ if now is not None else {}
    encoded: Mapping[str, Any] = now[1] if now is not None else {}
    for name, attname, kept_types, as_stored in fields:
        # A field deferred on the instance is not in its __dict__: let Django load it.
        deferred = instance is not None and attname not in values
        value = getattr(instance, attname) if deferred else values[attname]
        # Most values are already what the payload holds: skip the conversions for them.
        if type(value) not in kept_types:
            if current.get(attname, _ABSENT) is value:
                value = encoded[name]  # the same object, so the same encoding
            else:
                value = encode_value(as_stored(value))
        data[name] = value
    return data


_ABSENT: Any = object()


_SCALARS = frozenset({type(None), bool, int, float})


@functools.cache
def _fields_of(
    model: type[models.Model], field_names: tuple[str, ...]
) -> list[tuple[str, str, frozenset[type], Callable[[Any], Any]]]:
    """(name, attribute name, the value types ``_as_stored`` and ``encode_value`` leave as
    they are, the field's ``_as_stored``) per field: looked up once per model, not per
    save."""
    fields = []
    for name in field_names:
        model_field = model._meta.get_field(name)
        if isinstance(model_field, (models.FileField, models.DecimalField)):
            kept: frozenset[type] = frozenset()
        elif model_field.is_relation or isinstance(
            model_field, (models.CharField, models.TextField)
        ):
            kept = _SCALARS | {str}
        else:  # a string there is parsed as the database would (a date, a number)
            kept = _SCALARS
        attname = str(getattr(model_field, "attname", name))
        fields.append((name, attname, kept, _as_stored(model_field)))
    return fields


def _as_stored(model_field: Any) -> Callable[[Any], Any]:
    """The function giving a value of this field as the database gives it back, so that an
    instance fresh from ``create()`` (``amount=Decimal("10")``, ``issued_on="2026-01-02"``)
    serialises like the stored row (``"10.00"``, a date) and an unchanged field never counts
    as changed. Which rule applies depends on the field alone: decided once per field."""
    if model_field.is_relation:
        return _as_given
    if isinstance(model_field, models.FileField):
        return _stored_file_name
    if isinstance(model_field, models.DecimalField) and model_field.decimal_places is not None:
        return functools.partial(_quantized, decimal.Decimal(1).scaleb(-model_field.decimal_places))
    if isinstance(model_field, (models.CharField, models.TextField)):
        return _as_given
    return functools.partial(_parsed, model_field)


def _as_given(value: Any) -> Any:
    return value


def _stored_file_name(value: Any) -> Any:
    if value is None or isinstance(value, FieldFile):
        return value
    # A snapshot holds the raw stored name; the attribute would give a FieldFile.
    return str(value) or None


def _quantized(quantum: decimal.Decimal, value: Any) -> Any:
    if value is None:
        return value
    try:
        return decimal.Decimal(value).quantize(quantum)
    except (decimal.InvalidOperation, TypeError, ValueError):
        return value


def _parsed(model_field: Any, value: Any) -> Any:
    """A string in a field that does not store strings, parsed as the database would."""
    if not isinstance(value, str):
        return value
    try:
        return model_field.to_python(value)
    except Exception:  # a value the database would reject anyway; send it as given
        return value


def run_serializer(path: str, instance: models.Model) -> dict[str, Any]:
    """Data from a configured serializer: a callable, or a DRF serializer class."""
    serializer = import_string(path)
    if isinstance(serializer, type) and hasattr(serializer, "data"):
        result = serializer(instance).data
    else:
        result = serializer(instance)
    encoded = encode_value(dict(result))
    assert isinstance(encoded, dict)
    return encoded
