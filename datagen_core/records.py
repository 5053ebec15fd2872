"""Provider-neutral records: generator specs, requests, responses, runs.

Every config model forbids unknown fields, so a typo in a YAML file or a keyword argument is an
error, not a silently ignored setting. Semantic settings (what changes the model's output) are kept
apart from operational ones (how fast and how stubbornly we ask): only the former enter request
keys and run ids.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from datagen_core.errors import ConfigError
from datagen_core.secrets import redact_url, register_url_secrets

SCHEMA_VERSION = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(Record):
    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(Record):
    """Semantic decoding settings: part of every request key."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    max_tokens: int = Field(512, ge=1)
    seed: int | None = None
    stop: list[str] | None = None


class Limits(Record):
    """Operational settings: never part of a key, so tuning them never re-pays for answers."""

    concurrency: int = Field(32, ge=1, description="requests in flight at once")
    rpm: float | None = Field(None, gt=0, description="requests per minute")
    tpm: float | None = Field(None, gt=0, description="tokens per minute (prompt + max_tokens)")
    timeout_s: float = Field(120.0, gt=0, description="per-attempt timeout")
    max_retries: int = Field(6, ge=0)
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles, with jitter")
    backoff_max_s: float = Field(60.0, ge=0)
    batch_size: int | None = Field(None, ge=1, description="prompts per call for local engines")


class Price(Record):
    """US dollars per million tokens (APIs), and per hour of the machine (local generators,
    charged on measured compute time, so "PGR per dollar" exists for open models too)."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    per_hour: float = Field(0.0, ge=0, description="USD per hour of the machine a local "
                            "generator runs on (GPU or CPU rental), charged per compute second")




class GeneratorSpec(Record):
    """A generator LM: ``provider:model[@base_url]`` plus sampling, limits and price.

    ``api_key_env`` names the environment variable that holds the key; the key itself is never
    part of a spec, so specs can be logged, hashed and stored freely.
    """

    provider: str
    model: str = ""
    name: str | None = Field(
        None, description="display name in tables and leaderboards (operational: two settings "
        "of one model, e.g. two temperatures, need two names)")
    base_url: str | None = None
    api_key_env: str | None = None
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    limits: Limits = Field(default_factory=Limits)
    price: Price | None = None
    options: dict[str, Any] = Field(
        default_factory=dict, description="backend construction options (dtype, device, ...)"
    )

    @field_validator("provider")
    @classmethod
    def _provider_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_\-]*", v):
            raise ValueError(f"bad provider name {v!r}")
        return v

    @field_validator("base_url")
    @classmethod
    def _remember_url_secrets(cls, v: str | None) -> str | None:
        register_url_secrets(v)
        return v

    @field_serializer("base_url")
    def _dump_url_without_credentials(self, v: str | None) -> str | None:
        # Every dump (manifest, runs table, suite.json, exports) goes through here: the
        # credentials in a URL live only in memory.
        return redact_url(v)

    @classmethod
    def parse(cls, spec: str, **fields: Any) -> GeneratorSpec:
        """Parse ``provider:model[@base_url]``; extra keyword fields fill the rest.

        The model may itself contain ':' (``ollama`` tags such as ``llama3:8b``) and '@'; only a
        trailing ``@http(s)://...`` is taken as the base URL.
        """
        spec = spec.strip()
        if not spec:
            raise ConfigError("empty generator spec: use provider:model, e.g. openai:gpt-4o-mini")
        base_url = None
        m = re.search(r"@(https?://\S+)$", spec)
        if m:
            base_url = m.group(1).rstrip("/")
            spec = spec[: m.start()]
        provider, _, model = spec.partition(":")
        try:
            return cls(provider=provider, model=model, base_url=base_url, **fields)
        except ValidationError as e:
            raise ConfigError(f"bad generator spec {spec!r}: {_first_error(e)}") from None

    @property
    def label(self) -> str:
        """The spec as a user writes it, safe to print (no credentials in the URL)."""
        s = f"{self.provider}:{self.model}" if self.model else self.provider
        return f"{s}@{redact_url(self.base_url)}" if self.base_url else s

    @property
    def display(self) -> str:
        """The name a leaderboard shows: ``name`` if given, else the label."""
        return self.name or self.label

    def semantic(self) -> dict[str, Any]:
        """What identifies the model's output distribution: provider, model, server, sampling."""
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": redact_url(self.base_url),
            "sampling": self.sampling.model_dump(exclude_none=True),
        }


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "value"
    return f"{loc}: {err.get('msg', 'invalid')}"


def validation_message(e: ValidationError) -> str:
    """One line naming the offending key, for ConfigError messages."""
    return _first_error(e)


class GenRequest(Record):
    """One prompt to send. ``sample`` distinguishes repeated samples of the same prompt."""

    messages: list[Message]
    sampling: SamplingParams | None = None
    response_schema: dict[str, Any] | None = None
    sample: int = 0
    meta: dict[str, Any] = Field(default_factory=dict, description="not part of the key")


class Usage(Record):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


ErrorKind = Literal["rate_limit", "transient", "fatal", "invalid"]


class ErrorInfo(Record):
    """Why a request failed: ``kind`` decides retry (rate_limit, transient) or not."""

    kind: ErrorKind
    type: str
    message: str
    status: int | None = None


class GenResponse(Record):
    """A raw answer (or failure) for one request, exactly as persisted in responses.jsonl."""

    key: str
    index: int = -1
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cost_usd: float = 0.0
    error: ErrorInfo | None = None
    attempts: int = 1
    model: str | None = None
    raw: Any = None
    created_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class SourceSpec(Record):
    """Where prompts or seeds come from, and how to read them."""

    uri: str
    column: str | None = None
    fingerprint: str | None = None
    rows: int | None = None


RunStatus = Literal["running", "finished", "failed", "interrupted"]


class RunManifest(Record):
    """Everything needed to reproduce a run; written to runs/<id>/run.json."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    created_at: float
    generator: GeneratorSpec
    method: str
    method_version: str
    method_args: dict[str, Any] = Field(default_factory=dict)
    domain: str | None = None
    source: SourceSpec | None = None
    n: int | None = None
    datagen_version: str = ""
    parents: list[str] = Field(
        default_factory=list, description="runs this one was derived from (a selection's "
        "pool runs); empty for a run made by a generator")


class Instance(Record):
    """One produced SFT row: chat messages plus provenance; rejected rows keep their reason."""

    index: int
    instance_id: str
    messages: list[Message]
    valid: bool = True
    reject_reason: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class Pair(Record):
    """One preference row: a prompt, a chosen and a rejected answer (chat-message form), the
    attribute(s) it is about, and the evidence for the order (judge verdicts, rewards)."""

    index: int
    pair_id: str
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    attribute: str | None = None
    margin: float | None = None
    weight: float | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
