"""Specs, request keys and fingerprints: parsing rules and key stability."""

from __future__ import annotations

import pytest

from datagen_core.errors import ConfigError
from datagen_core.fingerprint import fingerprint, stable_hash
from datagen_core.records import GeneratorSpec, GenRequest, Message, SamplingParams
from generators.keys import request_key


def req(text: str = "hi", **kw) -> GenRequest:
    return GenRequest(messages=[Message(role="user", content=text)], **kw)


def test_spec_parsing_keeps_colons_in_model_and_splits_base_url():
    s = GeneratorSpec.parse("openai:llama3:8b@http://127.0.0.1:11434/v1/")
    assert (s.provider, s.model, s.base_url) == ("openai", "llama3:8b", "http://127.0.0.1:11434/v1")
    v = GeneratorSpec.parse("anthropic:claude@vertex-2024")
    assert v.model == "claude@vertex-2024" and v.base_url is None
    assert GeneratorSpec.parse("fake").model == ""


def test_spec_label_hides_url_credentials():
    s = GeneratorSpec.parse("openai:m@https://user:s3cretpass@host.example/v1")
    assert "s3cretpass" not in s.label
    assert "s3cretpass" not in str(s.semantic())


@pytest.mark.parametrize("bad", ["", "Open AI:x", ":model"])
def test_bad_specs_are_config_errors(bad):
    with pytest.raises(ConfigError):
        GeneratorSpec.parse(bad)


def test_unknown_fields_are_rejected():
    with pytest.raises(ConfigError, match="temprature"):
        GeneratorSpec.parse("openai:m", sampling={"temprature": 0.5})


def test_request_key_is_stable_across_versions():
    # Pinned: if this changes, every user's cache is invalidated. Change only on purpose.
    spec = GeneratorSpec.parse("openai:gpt-4o-mini", sampling={"temperature": 0, "seed": 1})
    assert request_key(spec, req("What is 2+2?")) == "8d55b223785a257499ee5ac66c0e4acd"
    assert fingerprint(None, "prompt", "1", {"n": 5}) == "d53cf7eb109a7e14"


def test_operational_settings_and_meta_do_not_change_the_key():
    a = GeneratorSpec.parse("openai:m")
    b = GeneratorSpec.parse("openai:m", limits={"concurrency": 3, "rpm": 10, "timeout_s": 5})
    assert request_key(a, req()) == request_key(b, req(meta={"row": 7}))


def test_semantic_settings_change_the_key():
    a = GeneratorSpec.parse("openai:m")
    base = request_key(a, req())
    assert request_key(GeneratorSpec.parse("openai:m2"), req()) != base
    assert request_key(GeneratorSpec.parse("openai:m@http://h:1/v1"), req()) != base
    assert request_key(a, req(sampling=SamplingParams(temperature=0.1))) != base
    assert request_key(a, req("other")) != base
    assert request_key(a, req(sample=1)) != base
    assert request_key(a, req(response_schema={"type": "object"})) != base


def test_equal_numbers_hash_equal():
    assert stable_hash({"t": 1.0}) == stable_hash({"t": 1})
