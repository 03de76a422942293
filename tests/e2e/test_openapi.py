"""The committed OpenAPI document is a valid OpenAPI 3.1 document (the Rust tests keep it
equal to the served and printed copies)."""

import json
from pathlib import Path

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
import pytest

DOCUMENT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def load():
    return json.loads(DOCUMENT.read_text())


def test_the_committed_document_is_valid_openapi_3_1():
    document = load()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_operation_has_a_unique_id():
    ids = [op["operationId"] for path in load()["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), ids


def test_the_validator_rejects_a_duplicate_operation_id():
    # The check above is only worth something if the validator catches what it is for.
    document = load()
    first, second = list(document["paths"].values())[:2]
    next(iter(second.values()))["operationId"] = next(iter(first.values()))["operationId"]
    with pytest.raises(OpenAPIValidationError):
        validate(document)
