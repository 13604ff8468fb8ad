"""The published schema tells the truth, and every error body is strict JSON. No model: a real
server on an empty workspace; what the validators decide is read from the request models the
server validates with."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from api.main import create_app
from api.schemas import AttributeRequest, SearchRequest
from api.testing import LiveServer
from rag.config import Settings
from tests.conftest import MODELS_CACHE


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("schema") / "home"
    with LiveServer(create_app(Settings(home=home, models_cache=MODELS_CACHE), load_models=False)) as base:
        yield base


def strict(body: bytes) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(body, parse_constant=refuse)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_a_422_echoing_a_non_finite_number_is_strict_json(url: str, value: str) -> None:
    body = '{"query": "lighthouse", "k": ' + value + "}"
    r = httpx.post(f"{url}/v1/search", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422
    (error,) = strict(r.content)["detail"]
    assert error["loc"] == ["body", "k"] and error["input"] in ("nan", "inf", "-inf")


TEXTS = ["a", " a ", "\x00", "a\x00b", " ", "\t\n", "\ufeff", "\x1c\x1d", "\u3000", "\x85", "é", "\u200b"]


@pytest.mark.parametrize("text", TEXTS)
def test_the_schema_patterns_accept_exactly_what_the_server_accepts(url: str, text: str) -> None:
    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()["components"]["schemas"]
    query = schema["SearchRequest"]["properties"]["query"]
    prefixes = schema["FiltersIn"]["properties"]["path_prefix"]["anyOf"]
    prefix = next(s for s in prefixes if s["type"] == "string")

    def accepted(model: Any, body: dict[str, Any]) -> bool:
        try:
            model.model_validate(body)
            return True
        except ValidationError:
            return False

    assert bool(re.search(query["pattern"], text)) == accepted(SearchRequest, {"query": text})
    body = {"query": "q", "filters": {"path_prefix": text}}
    assert bool(re.search(prefix["pattern"], text)) == accepted(SearchRequest, body)
    answer = schema["AttributeRequest"]["properties"]["answer"]
    body = {"question": "q", "answer": text}
    assert bool(re.search(answer["pattern"], text)) == accepted(AttributeRequest, body)


def test_the_schema_states_the_token_limit_and_the_upload_names(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    question = spec["components"]["schemas"]["AskRequest"]["properties"]["question"]
    assert question["maxLength"] == 4000 and "1,024 tokens" in question["description"]
    upload = spec["paths"]["/v1/documents"]["post"]
    ref = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    described = spec["components"]["schemas"][ref]["properties"]["file"]["description"]
    assert "name without an extension" in described and "415" in described and ".pdf" in described
    assert "415" in upload["responses"]


def test_an_upload_without_an_extension_is_the_415_the_schema_states(url: str, tmp_path: Path) -> None:
    r = httpx.post(f"{url}/v1/documents", files=[("file", ("README", b"plain words"))], timeout=30)
    assert r.status_code == 415 and "(no extension)" in strict(r.content)["detail"]
