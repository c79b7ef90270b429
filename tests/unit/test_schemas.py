"""Schemas: the receipt schema and its rules, user schemas, and routing objects to a schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from pipeline import schemas
from pipeline.checks import RuleFailure, run_rules
from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.routing import (
    Route,
    check_routes,
    configure_schemas,
    parse_routes,
    schema_for,
)
from pipeline.schemas import SchemaSpec, get_schema, schema_names
from pipeline.schemas.receipt import Receipt
from pipeline.schemas.user import DEFAULT_INSTRUCTIONS, load_schema, register_user_schemas

HERE = "tests.unit.test_schemas"


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # User schemas registered by one test must not leak into the next (or into other modules).
    schema_names()
    monkeypatch.setattr(schemas, "_SCHEMAS", dict(schemas._SCHEMAS))
    yield


# --- models the dotted-path tests import from this very module ---------------------------------


def _no_negative_total(data: dict[str, Any]) -> list[RuleFailure]:
    total = data.get("total")
    if total is not None and Decimal(str(total)) < 0:
        return [RuleFailure("no_negative_total", ("total",), "negative total")]
    return []


class PurchaseOrder(BaseModel):
    """Extract the purchase order's number, buyer and total."""

    __pagemill_name__ = "po"
    __pagemill_version__ = 3
    __pagemill_rules__ = (_no_negative_total,)

    po_number: str
    buyer: str | None = None
    total: Decimal | None = None


class ShippingLabel(BaseModel):
    tracking_number: str | None = None
    weight_kg: float | None = None


class HTTPShippingLabel(ShippingLabel):
    service: str | None = None


class BadlyNamed(BaseModel):
    __pagemill_name__ = "Not A Name"

    value: str | None = None


LABEL_SPEC = SchemaSpec(
    name="label_spec", version="7", model=ShippingLabel, instructions="Read the label."
)
NOT_A_MODEL = 42


# --- receipt -----------------------------------------------------------------------------------


def _receipt(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "merchant_name": " Corner Cafe ",
        "merchant_address": "1 Main St, Springfield",
        "receipt_number": "0042",
        "date": "2024-05-17",
        "time": "13:05",
        "currency": "usd",
        "subtotal": "18.50",
        "tax": "1.48",
        "tip": "3.00",
        "total": "22.98",
        "payment_method": "Visa ****1234",
        "line_items": [
            {"description": "Latte", "quantity": "2", "unit_price": "4.75", "amount": "9.50"},
            {"description": "Bagel", "quantity": "3", "unit_price": "3.00", "amount": "9.00"},
        ],
    }
    data.update(changes)
    return data


def _failures(data: dict[str, Any]) -> list[str]:
    spec = get_schema("receipt")
    record = spec.model.model_validate(data).model_dump(mode="json")
    return [failure.rule for failure in run_rules(spec.rules, record)]


def test_receipt_validates_and_normalises() -> None:
    spec = get_schema("receipt")
    record = spec.model.model_validate(_receipt())
    dumped = record.model_dump(mode="json")
    assert spec.name == "receipt" and spec.version
    assert dumped["merchant_name"] == "Corner Cafe"
    assert dumped["currency"] == "USD"
    assert dumped["date"] == "2024-05-17"
    assert dumped["time"] == "13:05:00"
    assert isinstance(record, Receipt)
    assert record.date == date(2024, 5, 17)
    assert record.time == time(13, 5)
    assert run_rules(spec.rules, dumped) == []


def test_receipt_json_schema_names_formats() -> None:
    props = get_schema("receipt").json_schema()["properties"]
    assert {"type": "string", "format": "date"} in props["date"]["anyOf"]
    assert {"type": "string", "format": "time"} in props["time"]["anyOf"]
    assert set(props) >= {"merchant_name", "subtotal", "tax", "tip", "total", "line_items"}


def test_receipt_rejects_unknown_currency_and_extra_fields() -> None:
    model = get_schema("receipt").model
    with pytest.raises(ValidationError, match="ISO 4217"):
        model.model_validate(_receipt(currency="XYZ"))
    with pytest.raises(ValidationError):
        model.model_validate(_receipt(cashier="Bob"))


def test_wrong_total_is_caught() -> None:
    # The items still match the subtotal; only the totals line is off.
    assert _failures(_receipt(total="23.98")) == ["subtotal_tax_tip_is_total"]
    (failure,) = run_rules(get_schema("receipt").rules, _receipt(total="23.98"))
    assert failure.message == (
        "subtotal 18.50 + tax 1.48 + tip 3.00 = 22.98, but the total is 23.98"
    )
    assert failure.fields == ("subtotal", "tax", "tip", "total")
    # Without a subtotal, the items are checked against the total instead.
    assert _failures(_receipt(subtotal=None, total="25.00")) == ["lines_sum_to_subtotal_or_total"]


def test_line_items_must_add_up() -> None:
    items = [{"description": "Latte", "amount": "9.50"}, {"description": "Bagel", "amount": "5"}]
    assert _failures(_receipt(line_items=items)) == ["lines_sum_to_subtotal_or_total"]


def test_tax_inclusive_receipt_passes() -> None:
    # A VAT receipt: gross item prices sum to the total; the tax line is contained in it.
    data = _receipt(
        currency="EUR",
        subtotal=None,
        tax="1.90",
        tip=None,
        total="11.90",
        line_items=[{"description": "Brot", "amount": "4.40"}, {"amount": "7.50"}],
    )
    assert _failures(data) == []
    assert _failures({**data, "subtotal": "11.90"}) == []


def test_no_tip_and_no_lines_is_fine() -> None:
    assert _failures(_receipt(tip=None, total="19.98", line_items=[])) == []


def test_receipt_quantity_price_and_dates() -> None:
    bad_line = [{"quantity": "2", "unit_price": "4.75", "amount": "18.50"}]
    assert _failures(_receipt(line_items=bad_line)) == ["line_quantity_times_price"]
    tomorrow_plus = (date.today() + timedelta(days=3)).isoformat()
    assert _failures(_receipt(date=tomorrow_plus)) == ["plausible_dates"]
    assert _failures(_receipt(date="1980-01-01")) == ["plausible_dates"]


# --- user schemas: dotted paths ----------------------------------------------------------------


@pytest.mark.parametrize("ref", [f"{HERE}:PurchaseOrder", f"{HERE}.PurchaseOrder"])
def test_model_by_dotted_path(ref: str) -> None:
    spec = load_schema(ref)
    assert spec.name == "po"
    assert spec.version == "3"
    assert spec.model is PurchaseOrder
    assert spec.instructions.startswith("Extract the purchase order's number")
    assert "never guess" in spec.instructions
    assert spec.source == ref
    assert [failure.rule for failure in run_rules(spec.rules, {"total": "-1"})] == [
        "no_negative_total"
    ]


def test_model_defaults_name_version_and_instructions() -> None:
    spec = load_schema(f"{HERE}:ShippingLabel")
    assert spec.name == "shipping_label"
    assert len(spec.version) == 12 and int(spec.version, 16) >= 0
    assert spec.version == load_schema(f"{HERE}:ShippingLabel").version
    assert spec.instructions == DEFAULT_INSTRUCTIONS
    # A subclass is another schema: it inherits neither the name nor the version.
    child = load_schema(f"{HERE}:HTTPShippingLabel")
    assert child.name == "http_shipping_label"
    assert child.version != spec.version


def test_schema_spec_by_dotted_path() -> None:
    spec = load_schema(f"{HERE}:LABEL_SPEC")
    assert (spec.name, spec.version, spec.instructions) == ("label_spec", "7", "Read the label.")
    assert spec.source == f"{HERE}:LABEL_SPEC"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty schema reference"),
        ("not a ref!", "neither a JSON Schema file"),
        ("PurchaseOrder", "expected package.module:ClassName"),
        ("pagemill_no_such_module:Model", "cannot import 'pagemill_no_such_module'"),
        (f"{HERE}:Missing", "has no attribute 'Missing'"),
        (f"{HERE}:NOT_A_MODEL", "not a Pydantic model class or a SchemaSpec \\(found int\\)"),
        (f"{HERE}:BadlyNamed", "name 'Not A Name' must be"),
    ],
)
def test_bad_dotted_refs(ref: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message) as caught:
        load_schema(ref)
    assert caught.value.category is ErrorCategory.CONFIGURATION


def test_import_failure_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pagemill_broken_schema.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PermanentError, match="RuntimeError: boom") as caught:
        load_schema("pagemill_broken_schema:Model")
    assert caught.value.category is ErrorCategory.CONFIGURATION


# --- user schemas: JSON Schema files -----------------------------------------------------------

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/schemas/delivery-note.json",
    "title": "Delivery Note",
    "description": "A delivery note from a supplier.",
    "type": "object",
    "required": ["note_number", "delivered_on", "status", "carrier"],
    "properties": {
        "note_number": {"type": "string", "description": "Number as printed", "maxLength": 20},
        "delivered_on": {"type": "string", "format": "date"},
        "signed_at": {"type": "string", "format": "date-time"},
        "weight": {"type": ["number", "null"], "minimum": 0},
        "parcels": {"type": "integer"},
        "damaged": {"type": "boolean"},
        "status": {"enum": ["complete", "partial"]},
        "carrier": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "Total Amount": {"type": "number"},
        "recipient": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
        "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "$defs": {
        "Line": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            "required": ["sku"],
        }
    },
}

VALID_NOTE: dict[str, Any] = {
    "note_number": "DN-1",
    "delivered_on": "2024-03-02",
    "signed_at": "2024-03-02T10:15:00Z",
    "weight": None,
    "parcels": "3",
    "damaged": False,
    "status": "partial",
    "carrier": None,
    "Total Amount": 12.5,
    "recipient": {"name": "Ada"},
    "lines": [{"sku": "A-1", "qty": 2}],
    "tags": ["fragile"],
}


def _write(tmp_path: Path, document: dict[str, Any], name: str = "schema.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document, indent=2))
    return str(path)


def test_json_schema_file(tmp_path: Path) -> None:
    spec = load_schema(_write(tmp_path, ORDER_SCHEMA))
    assert spec.name == "delivery_note"
    assert spec.instructions.startswith("A delivery note from a supplier.")
    record = spec.model.model_validate(VALID_NOTE)
    dumped = record.model_dump(mode="json")
    assert dumped["delivered_on"] == "2024-03-02"
    assert record.model_dump()["delivered_on"] == date(2024, 3, 2)
    assert dumped["parcels"] == 3
    assert dumped["Total Amount"] == 12.5  # the JSON name survives the Python attribute name
    assert dumped["lines"] == [{"sku": "A-1", "qty": 2}]
    assert dumped["recipient"] == {"name": "Ada"}

    # The model is shown the user's names, types and descriptions.
    shown = spec.json_schema()
    assert shown["title"] == "Delivery Note"
    assert set(shown["required"]) == {"note_number", "delivered_on", "status", "carrier"}
    assert shown["properties"]["note_number"]["description"] == "Number as printed"
    assert "Total Amount" in shown["properties"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"delivered_on": "2 March"}, "delivered_on"),
        ({"note_number": None}, "note_number"),  # required, not nullable
        ({"note_number": "x" * 21}, "note_number"),
        ({"status": "lost"}, "status"),  # enum
        ({"weight": -1}, "weight"),
        ({"parcels": "three"}, "parcels"),
        ({"recipient": {}}, "recipient.name"),
        ({"lines": [{"qty": 1}]}, "lines.0.sku"),
        ({"surprise": 1}, "surprise"),  # additionalProperties defaults to false
    ],
)
def test_json_schema_file_rejects(tmp_path: Path, change: dict[str, Any], where: str) -> None:
    model = load_schema(_write(tmp_path, ORDER_SCHEMA)).model
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**VALID_NOTE, **change})
    assert where in {".".join(str(p) for p in err["loc"]) for err in caught.value.errors()}


def test_json_schema_required_and_nullable(tmp_path: Path) -> None:
    model = load_schema(_write(tmp_path, ORDER_SCHEMA)).model
    missing = {k: v for k, v in VALID_NOTE.items() if k != "carrier"}
    with pytest.raises(ValidationError, match="carrier"):
        model.model_validate(missing)  # required even though it may be null
    minimal = {k: VALID_NOTE[k] for k in ("note_number", "delivered_on", "status", "carrier")}
    dumped = model.model_validate(minimal).model_dump(mode="json")
    assert dumped["weight"] is None and dumped["lines"] is None  # optional means may be absent


def test_json_schema_version_and_name_fallbacks(tmp_path: Path) -> None:
    path = _write(tmp_path, ORDER_SCHEMA)
    first = load_schema(path).version
    Path(path).write_text(json.dumps(ORDER_SCHEMA))  # same content, other layout
    assert load_schema(path).version == first
    changed = {**ORDER_SCHEMA, "required": ["note_number"]}
    assert load_schema(_write(tmp_path, changed)).version != first
    assert load_schema(_write(tmp_path, {**ORDER_SCHEMA, "version": "2.1"})).version == "2.1"

    untitled = {k: v for k, v in ORDER_SCHEMA.items() if k not in {"title", "description"}}
    spec = load_schema(_write(tmp_path, untitled, "Goods-Receipt.json"))
    assert spec.name == "goods_receipt"
    assert spec.instructions == DEFAULT_INSTRUCTIONS


def test_json_schema_nullable_forms(tmp_path: Path) -> None:
    document = {
        "title": "nullables",
        "type": "object",
        "required": ["a", "b", "c", "d"],
        "properties": {
            "a": {"type": ["string", "null"]},
            "b": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "c": {"enum": ["x", "y", None]},
            "d": {"type": "string", "nullable": True},
        },
    }
    model = load_schema(_write(tmp_path, document)).model
    assert model.model_validate(dict.fromkeys("abcd")).model_dump() == dict.fromkeys("abcd")
    with pytest.raises(ValidationError):
        model.model_validate({"a": None, "b": None, "c": "z", "d": None})


@pytest.mark.parametrize(
    ("node", "feature"),
    [
        ({"type": "string", "format": "email"}, "'format' 'email'"),
        ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "'allOf' with more than one"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "'oneOf' other than one"),
        ({"type": ["string", "integer"]}, "'type' ['string', 'integer']"),
        ({"$ref": "other.json#/Line"}, "'$ref' 'other.json#/Line'"),
        ({"type": "string", "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "object", "patternProperties": {}}, "'patternProperties'"),
        ({"type": "object", "properties": {}, "additionalProperties": {}}, "'additionalProp"),
        ({"type": "array", "items": [{"type": "string"}]}, "tuple-style 'items'"),
        ({"description": "no type"}, "a schema without 'type'"),
        ({"type": "null"}, "'type' 'null'"),
    ],
)
def test_unsupported_features_are_named(tmp_path: Path, node: dict[str, Any], feature: str) -> None:
    document = {"title": "odd", "type": "object", "properties": {"field": node}}
    with pytest.raises(PermanentError) as caught:
        load_schema(_write(tmp_path, document))
    assert caught.value.category is ErrorCategory.CONFIGURATION
    assert "unsupported JSON Schema feature" in caught.value.message
    assert feature in caught.value.message
    assert "#/properties/field" in caught.value.message
    assert "schema.json" in caught.value.message


def test_recursive_ref_is_unsupported(tmp_path: Path) -> None:
    document = {
        "title": "tree",
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/Node"}},
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
    }
    with pytest.raises(PermanentError, match=r"recursive '\$ref' '#/\$defs/Node'"):
        load_schema(_write(tmp_path, document))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the JSON Schema file"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"type": "array", "items": {"type": "string"}}', "root must be an object"),
        (
            '{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}',
            "names 'b', not a property",
        ),
        ('{"title": "Has Space!", "type": "object", "properties": {}, "if": {}}', "'if'"),
    ],
)
def test_bad_json_schema_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PermanentError, match=message) as caught:
        load_schema(str(path))
    assert caught.value.category is ErrorCategory.CONFIGURATION


# --- registration ------------------------------------------------------------------------------


def test_registered_user_schemas_are_found(tmp_path: Path) -> None:
    json_ref = _write(tmp_path, ORDER_SCHEMA)
    assert "po" not in schema_names()
    specs = register_user_schemas([f"{HERE}:PurchaseOrder", json_ref, "  "])
    assert [spec.name for spec in specs] == ["po", "delivery_note"]
    assert {"invoice", "receipt", "po", "delivery_note"} <= set(schema_names())
    assert get_schema("po").model is PurchaseOrder
    assert get_schema("delivery_note").source == json_ref
    # Registering the same refs again (a second start-up in the same process) is harmless.
    register_user_schemas([f"{HERE}:PurchaseOrder", json_ref])


def test_user_schema_cannot_take_a_taken_name(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="already taken by a built-in schema"):
        register_user_schemas([_write(tmp_path, {**ORDER_SCHEMA, "title": "Receipt"})])
    register_user_schemas([f"{HERE}:PurchaseOrder"])
    clash = _write(tmp_path, {**ORDER_SCHEMA, "title": "PO"})
    with pytest.raises(PermanentError, match=f"already taken by {HERE}:PurchaseOrder"):
        register_user_schemas([clash])


# --- routing -----------------------------------------------------------------------------------


def _ref(key: str, bucket: str = "inbox") -> ObjectRef:
    return ObjectRef(bucket=bucket, key=key)


def test_parse_routes() -> None:
    routes = parse_routes(
        " receipts/=receipt; receipts/2019/*=invoice ;\ns3://archive/=receipt;"
        "year=2024/=invoice;*=invoice;"
    )
    assert routes == [
        Route("receipt", "receipts/"),
        Route("invoice", "receipts/2019/"),
        Route("receipt", "", bucket="archive"),
        Route("invoice", "year=2024/"),
        Route("invoice"),
    ]
    assert parse_routes("") == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("receipts/", "expected prefix=schema"),
        ("=receipt", "expected prefix=schema"),
        ("receipts/=Receipt Scan", "'Receipt Scan' is not a schema name"),
        ("a/=receipt;a/*=invoice", "a/ already routes to receipt"),
        ("*=receipt;*=invoice", "already routes"),
        ("a/*/b=receipt", "only allowed at the end"),
        ("s3:///x=receipt", "no bucket"),
    ],
)
def test_parse_routes_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_routes(spec)


def test_longest_prefix_wins_then_star_then_default() -> None:
    routes = parse_routes("receipts/=receipt;receipts/2019/=invoice")
    assert schema_for(_ref("receipts/a.pdf"), routes, None, "invoice") == "receipt"
    assert schema_for(_ref("receipts/2019/a.pdf"), routes, None, "receipt") == "invoice"
    assert schema_for(_ref("other/a.pdf"), routes, None, "receipt") == "receipt"
    with_star = parse_routes("receipts/=receipt;*=invoice")
    assert schema_for(_ref("other/a.pdf"), with_star, None, "receipt") == "invoice"


def test_bucket_routes_beat_key_routes() -> None:
    routes = parse_routes("receipts/=receipt;s3://ap/*=invoice")
    assert schema_for(_ref("receipts/a.pdf", "ap"), routes, {}, "receipt") == "invoice"
    assert schema_for(_ref("receipts/a.pdf", "inbox"), routes, {}, "invoice") == "receipt"


@pytest.mark.parametrize(
    "metadata",
    [
        {"pagemill-schema": "receipt"},
        {"Pagemill-Schema": "receipt"},
        {"x-amz-meta-pagemill-schema": " Receipt "},
        {"other": "x", "pagemill-schema": "receipt"},
    ],
)
def test_metadata_wins_over_routes(metadata: dict[str, str]) -> None:
    routes = parse_routes("invoices/=invoice;*=invoice")
    assert schema_for(_ref("invoices/a.pdf"), routes, metadata, "invoice") == "receipt"


def test_blank_metadata_is_ignored() -> None:
    routes = parse_routes("*=receipt")
    assert schema_for(_ref("a.pdf"), routes, {"pagemill-schema": " "}, "invoice") == "receipt"


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(PermanentError) as caught:
        schema_for(_ref("a.pdf"), [], {"pagemill-schema": "passport"}, "invoice")
    assert caught.value.category is ErrorCategory.CONFIGURATION
    assert "unknown schema 'passport' from object metadata" in caught.value.message
    assert "known: invoice, receipt" in caught.value.message
    assert "s3://inbox/a.pdf" in caught.value.message

    with pytest.raises(PermanentError, match="schema route x/=passport"):
        schema_for(_ref("x/a.pdf"), parse_routes("x/=passport"), None, "invoice")
    with pytest.raises(PermanentError, match="from the default schema"):
        schema_for(_ref("a.pdf"), [], None, "passport")


def test_check_routes_at_start_up() -> None:
    check_routes(parse_routes("r/=receipt;*=invoice"), "invoice")
    with pytest.raises(PermanentError, match=r"r/=passport, default=visa \(known: invoice"):
        check_routes(parse_routes("r/=passport;*=invoice"), "visa")


def test_configure_schemas_routes_to_user_schemas(tmp_path: Path) -> None:
    json_ref = _write(tmp_path, ORDER_SCHEMA)
    routes = configure_schemas(
        [f"{HERE}:PurchaseOrder", json_ref], "orders/=po;notes/=delivery_note", "invoice"
    )
    assert schema_for(_ref("orders/1.pdf"), routes, None, "invoice") == "po"
    assert schema_for(_ref("notes/1.pdf"), routes, None, "invoice") == "delivery_note"
    assert schema_for(_ref("x.pdf"), routes, {"pagemill-schema": "po"}, "invoice") == "po"
    with pytest.raises(PermanentError, match="expected prefix=schema") as caught:
        configure_schemas([], "orders/", "invoice")
    assert caught.value.category is ErrorCategory.CONFIGURATION
