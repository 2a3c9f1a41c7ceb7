"""Payload encoding: values to JSON types, and the body's byte-for-byte agreement with what
JavaScript's ``JSON.stringify(JSON.parse(body))`` gives back.

Many receivers (seeds 000, 003, 004) sign-check ``JSON.stringify(req.body)``, so any byte where
we differ from Node fails their verification. The tables below hold known JavaScript outputs
and always run; the property tests ask a real Node when one is installed (CI installs nodejs)
and say so in the skip reason when it is not.
"""

import datetime
import decimal
import enum
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from django.utils.translation import gettext_lazy
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.factories import ArticleFactory
from tests.models import Account, Article, Invoice
from webhooks_app import registry
from webhooks_app.serialization import (
    MAX_SAFE_INTEGER,
    UnserializableValue,
    _write,
    dumps,
    encode_value,
    instance_data,
    js_number,
    run_serializer,
)

NODE = shutil.which("node")
NO_NODE = "node is not installed: only the fixed tables of JavaScript outputs ran"

# One Node process for the module, answering one JSON line per request line: starting Node
# costs ~50 ms, so a process per example would make the property tests slow. The answer is
# written with non-ASCII escaped so that it is exactly one ASCII line whatever the strings hold.
NODE_SCRIPT = r"""
const rl = require("readline").createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const { op, values } = JSON.parse(line);
  const out = op === "number"
    ? values.map((text) => String(Number(text)))
    : values.map((body) => JSON.stringify(JSON.parse(body)));
  const escaped = JSON.stringify(out).replace(
    /[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  process.stdout.write(escaped + "\n");
});
"""


class Node:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(NODE), "-e", NODE_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="ascii",
        )

    def _ask(self, op: str, values: list[str]) -> list[str]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, "values": values}) + "\n")
        self.process.stdin.flush()
        answer: list[str] = json.loads(self.process.stdout.readline())
        return answer

    def number_strings(self, floats: list[float]) -> list[str]:
        """``String(x)`` for each float; repr() carries the exact double to Node."""
        return self._ask("number", [repr(value) for value in floats])

    def restringify(self, bodies: list[str]) -> list[str]:
        """``JSON.stringify(JSON.parse(body))`` for each body."""
        return self._ask("json", bodies)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    if NODE is None:
        pytest.skip(NO_NODE)
    runner = Node()
    yield runner
    runner.close()


# --- js_number -----------------------------------------------------------------------------

# (float, what JavaScript's String(x) gives)
JS_NUMBERS = [
    (1.0, "1"),
    (-1.0, "-1"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (123456789012345680000.0, "123456789012345680000"),
    (1e-6, "0.000001"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (5e-05, "0.00005"),
    (0.1 + 0.2, "0.30000000000000004"),
    (-0.0, "0"),
    (0.0, "0"),
    (1.5e300, "1.5e+300"),
    (-1.5e300, "-1.5e+300"),
    (123.456, "123.456"),
    (0.5, "0.5"),
    (100.0, "100"),
    (2.0**53, "9007199254740992"),
    # Shortest round-trip digits, then zeros: not the exact integer 1152921504606846976.
    (2.0**60, "1152921504606847000"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (1.2345e-5, "0.000012345"),
    (1.2345e21, "1.2345e+21"),
]


@pytest.mark.parametrize(("value", "expected"), JS_NUMBERS, ids=repr)
def test_js_number_known_outputs(value, expected):
    assert js_number(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_js_number_non_finite_is_null(value):
    # JSON has no NaN or Infinity; JSON.stringify writes null for them, and so do we.
    assert js_number(value) == "null"
    assert dumps({"x": value}) == '{"x":null}'


def test_js_number_table_matches_node(node):
    # Guards the fixed table itself: the table is what runs where Node is missing.
    assert node.number_strings([value for value, _ in JS_NUMBERS]) == [
        expected for _, expected in JS_NUMBERS
    ]


@hypothesis_settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_js_number_matches_node(node, floats):
    assert [js_number(value) for value in floats] == node.number_strings(floats)


# --- the JSON round trip -------------------------------------------------------------------


def is_array_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and str(int(key)) == key and int(key) < 2**32 - 1


# Keys that look like array indexes are left out here: JavaScript moves them to the front of
# an object, which dumps() does not do (see test_dumps_matches_javascript_everywhere).
json_keys = st.text(max_size=8).filter(lambda key: not is_array_index(key))
json_text = st.text(max_size=20) | st.sampled_from(
    ["é", "日本語", "😀", "\x00", "\x1f", "\x7f", "\u2028\u2029", '"\\/', "\ufeff", "\t\n\r\b\f"]
)
json_ints = (
    st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER, -(2**53)])
)
json_scalars = (
    st.none()
    | st.booleans()
    | json_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=25,
)


def documented(value: Any) -> Any:
    """What ``json.loads(dumps(value))`` must give: the module docstring's conversions."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        # JavaScript writes an integral number below 1e21 without a point or exponent.
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if isinstance(value, list):
        return [documented(item) for item in value]
    return {key: documented(item) for key, item in value.items()}


def tagged(value: Any) -> Any:
    """``value`` with every scalar's type attached, so 1 and 1.0 and True compare unequal."""
    if isinstance(value, list):
        return ["list", [tagged(item) for item in value]]
    if isinstance(value, dict):
        return ["dict", [[key, tagged(item)] for key, item in value.items()]]
    if type(value) is int and abs(value) > MAX_SAFE_INTEGER:
        # Only an integral float gets here (big ints are sent as strings), and JavaScript
        # writes it with its shortest digits padded with zeros: compare it as the double.
        return ["int", float(value)]
    return [type(value).__name__, value]


@hypothesis_settings(max_examples=150, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=10))
def test_dumps_survives_javascript_round_trip(node, values):
    bodies = [dumps(value) for value in values]
    assert node.restringify(bodies) == bodies


@hypothesis_settings(max_examples=200, deadline=None)
@given(json_values)
def test_dumps_loads_gives_value_back(value):
    # Parsed from the UTF-8 bytes we send, not from the str.
    assert tagged(json.loads(dumps(value).encode())) == tagged(documented(value))


@hypothesis_settings(max_examples=400, deadline=None)
@given(json_values)
def test_the_fast_path_writes_what_the_careful_writer_writes(value):
    # dumps() hands most payloads (floats included) to Python's C encoder; it must never
    # write other bytes than the JavaScript-exact writer would.
    careful: list[str] = []
    _write(value, careful)
    assert dumps(value) == "".join(careful)


@pytest.mark.parametrize(
    "number",
    [
        0.0,
        -0.0,
        1.0,
        3.5,
        1e-4,
        1.5e-4,
        9.99e-5,
        1e15 + 0.5,
        2.0**53,
        2.0**53 + 2,
        1e16,
        1e20,
        1e21,
        2.0**60,
    ],
)
def test_the_fast_path_writes_floats_at_its_edges_as_javascript_does(number):
    assert dumps({"rating": number}) == '{"rating":' + js_number(number) + "}"


# (value, the body JavaScript's JSON.stringify(JSON.parse(body)) gives back)
ROUND_TRIP = [
    ({"a": 1.0, "b": [1.5, 2.0, -0.0]}, '{"a":1,"b":[1.5,2,0]}'),
    (
        {"big": 2**53, "neg": -(2**53), "safe": 2**53 - 1},
        '{"big":"9007199254740992","neg":"-9007199254740992","safe":9007199254740991}',
    ),
    (
        [1e21, 1e20, 1e-7, 5e-05, 0.1 + 0.2],
        "[1e+21,100000000000000000000,1e-7,0.00005,0.30000000000000004]",
    ),
    ({"text": "é 日本語 😀"}, '{"text":"é 日本語 😀"}'),
    ("\x00\x1f\x7f\u2028", '"\\u0000\\u001f\x7f\u2028"'),
    ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
    ('quote " backslash \\ slash /', '"quote \\" backslash \\\\ slash /"'),
    (
        {"nested": {"list": [True, False, None, {}], "empty": []}},
        '{"nested":{"list":[true,false,null,{}],"empty":[]}}',
    ),
    ({"z": 1, "a": 2, "01": 3, "-1": 4}, '{"z":1,"a":2,"01":3,"-1":4}'),
]


@pytest.mark.parametrize(("value", "expected"), ROUND_TRIP)
def test_round_trip_known_outputs(value, expected):
    assert dumps(value) == expected
    assert tagged(json.loads(expected)) == tagged(documented(value))


def test_round_trip_table_matches_node(node):
    expected = [body for _, body in ROUND_TRIP]
    assert node.restringify(expected) == expected


# Found while writing these tests. The values on the right are Node's (checked against a real
# Node in test_javascript_divergences_are_real).
JS_DIVERGENCES = [
    pytest.param(
        {"b": 1, "1": 2, "0": 3},
        '{"0":3,"1":2,"b":1}',
        id="integer-like-keys",
    ),
    pytest.param("\ud800", '"\\ud800"', id="lone-surrogate"),
]


@pytest.mark.parametrize(("value", "javascript"), JS_DIVERGENCES)
def test_dumps_matches_javascript_everywhere(value, javascript):
    assert dumps(value) == javascript


@pytest.mark.parametrize(("value", "javascript"), JS_DIVERGENCES)
def test_javascript_divergences_are_real(node, value, javascript):
    assert node.restringify([json.dumps(value)]) == [javascript]


# --- encode_value --------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = 2


class Priority(int, enum.Enum):
    HIGH = 1


SOME_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (decimal.Decimal("12.50"), "12.50"),
        (decimal.Decimal("-0.001"), "-0.001"),
        (SOME_UUID, "12345678-1234-5678-1234-567812345678"),
        (
            datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
            "2024-05-06T07:08:09.123456Z",
        ),
        (datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=PLUS_TWO), "2024-05-06T05:08:09Z"),
        (datetime.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
        (datetime.date(2024, 5, 6), "2024-05-06"),
        (datetime.time(7, 8, 9), "07:08:09"),
        (datetime.time(7, 8, 9, 500), "07:08:09.000500"),
        (datetime.timedelta(days=1, hours=2, minutes=3, seconds=4), "P1DT02H03M04S"),
        (datetime.timedelta(seconds=1.5), "P0DT00H00M01.500000S"),
        (-datetime.timedelta(seconds=90), "-P0DT00H01M30S"),
        (b"\x00\xffwebhook", "AP93ZWJob29r"),
        (bytearray(b"hi"), "aGk="),
        (memoryview(b"hi"), "aGk="),
        (gettext_lazy("Published"), "Published"),
        (Article.Status.PUBLISHED, "published"),
        (Colour.RED, "red"),
        (Colour.GREEN, 2),
        ({"b", "a", "c"}, ["a", "b", "c"]),
        (frozenset({"y", "x"}), ["x", "y"]),
        (("a", 1), ["a", 1]),
        ({1: decimal.Decimal("1.0"), "k": [SOME_UUID]}, {"1": "1.0", "k": [str(SOME_UUID)]}),
        (Invoice(pk=7), 7),
        (Invoice(), None),
    ],
    ids=lambda value: type(value).__name__,
)
def test_encode_value(value, expected):
    encoded = encode_value(value)
    assert encoded == expected
    # isinstance, not type(): a TextChoices member comes back as itself, which is a str.
    assert isinstance(encoded, type(expected))
    assert dumps(value) == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


def test_encode_value_file_field():
    assert encode_value(Article(attachment="attachments/report.pdf").attachment) == (
        "attachments/report.pdf"
    )
    # An empty FileField is "no file", not an empty file name.
    assert encode_value(Article().attachment) is None


@pytest.mark.parametrize("value", [object(), 1 + 2j, Article, lambda: None])
def test_encode_value_unknown_type_raises(value):
    with pytest.raises(UnserializableValue, match=r"cannot encode \w+ in a webhook payload"):
        encode_value(value)
    with pytest.raises(UnserializableValue):
        dumps({"nested": [value]})


def test_int_enum_mixin_is_its_value():
    assert dumps({"priority": Priority.HIGH}) == '{"priority":1}'


def test_set_of_numbers_is_sorted_numerically():
    assert encode_value({10, 9, 100}) == [9, 10, 100]


# --- model data ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_instance_data_of_article(user):
    published_at = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    created = ArticleFactory.create(
        title="Ünïcode 😀",
        author=user,
        price=decimal.Decimal("12.50"),
        rating=4.0,
        attachment="attachments/report.pdf",
        published_at=published_at,
    )
    article = Article.objects.get(pk=created.pk)
    watched = registry.watched_models()[Article]

    data = instance_data(article, watched.data_field_names)

    assert data == {
        "id": article.pk,
        "uid": str(article.uid),
        "title": "Ünïcode 😀",
        "body": "",
        "status": "draft",
        "author": user.pk,
        "rating": 4.0,
        "price": "12.50",
        "attachment": "attachments/report.pdf",
        "published_at": "2024-05-06T07:08:09Z",
    }
    assert json.loads(dumps(data))["rating"] == 4


@pytest.mark.django_db
def test_instance_data_without_file_or_author():
    article = Article.objects.get(pk=ArticleFactory.create().pk)
    data = instance_data(article, ["author", "attachment", "published_at"])
    assert data == {"author": None, "attachment": None, "published_at": None}


def account_fields(options: dict[str, Any]) -> list[str]:
    with override_settings(WEBHOOKS={"MODELS": {"tests.Account": options}}):
        return list(registry.watched_models()[Account].data_field_names)


def test_sensitive_fields_left_out_by_default():
    assert account_fields({}) == ["id", "email", "plan", "preferences"]
    assert account_fields({"exclude": ["plan"]}) == ["id", "email", "preferences"]


def test_sensitive_fields_included_when_named():
    fields = ["email", "password", "api_token", "client_secret"]
    assert account_fields({"fields": fields}) == ["id", *fields]


def test_primary_key_always_included():
    assert account_fields({"fields": ["plan"]}) == ["id", "plan"]
    assert list(registry.watched_models()[Invoice].data_field_names) == [
        "id",
        "number",
        "amount",
        "issued_on",
    ]


def test_primary_key_cannot_be_excluded():
    assert account_fields({"exclude": ["id"]}) == ["id", "email", "plan", "preferences"]


# --- configured serializers ----------------------------------------------------------------


def test_run_serializer_plain_callable():
    invoice = Invoice(
        number="INV-1", amount=decimal.Decimal("10.00"), issued_on=datetime.date(2024, 1, 2)
    )
    data = run_serializer("tests.serializers.invoice_summary", invoice)
    assert data == {"number": "INV-1", "amount": "10.00", "issued_on": "2024-01-02"}


@pytest.mark.django_db
def test_run_serializer_drf_class(user):
    article = ArticleFactory.create(title="Hello", author=user, price=decimal.Decimal("3.10"))
    data = run_serializer("tests.serializers.ArticleSerializer", article)
    assert data == {
        "id": article.pk,
        "uid": str(article.uid),
        "title": "Hello",
        "price": "3.10",
        "author": user.pk,
        "headline": "HELLO",
    }
    assert type(data) is dict
