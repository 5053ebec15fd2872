"""Training recipes: how a student is made from a base model and one run's data.

A recipe is a pydantic config (unknown keys are errors, so a typo in a YAML file fails loudly).
The same :class:`Recipe` drives every student, from the 0.7M-parameter CPU model in the tests to
Llama-3.1-8B on a GPU node: only the values differ, never the code path.

Presets (``load_recipe("tiny-llama")``):

- ``sft`` / ``dpo``: the GPU defaults. ``sft`` follows AgoraBench's student setup where we know
  it: the student is the *base* Llama-3.1-8B, fully fine-tuned (no LoRA) on a generator's data.
  The optimisation values (lr 1e-5, 3 epochs, cosine, 3% warm-up, effective batch 64, 4,096
  tokens) are common full fine-tuning choices made here, not numbers taken from the paper. ``dpo``
  starts from Llama-3.1-8B-Instruct (DPO assumes an instruction-following start) with lr 5e-7,
  beta 0.1, one epoch: again our choice, not the paper's. Both assume one GPU with room for bf16
  weights, gradients and AdamW state of an 8B model (about 64 GB plus activations: an 80 GB card
  with gradient checkpointing, more comfortably 141 GB); sharding across GPUs is not done here.
- ``tiny-llama`` / ``tiny-llama-dpo``: a Llama-architecture model built from a config (hidden 128,
  4 layers, 4 heads, intermediate 256) with a byte-level BPE tokenizer trained on the student's own
  data (digits one token each). DESIGN.md records that this model, 6 epochs, batch 64, lr 2e-3
  cosine, reached 89% on 8k addition problems in 130 s on 2 cores.
- ``smollm2-lora`` / ``smollm2-lora-dpo``: the embedded SmolLM2-135M-Instruct with LoRA on the
  attention projections; minutes on a CPU for a few hundred examples.

The student id hashes the *semantic* part of a recipe (:meth:`Recipe.semantic`): resources, the
label and logging cadence are operational and never change an id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datagen_core.errors import ConfigError
from datagen_core.records import validation_message

SCRATCH = "scratch"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(Config):
    """What one training task reserves on a Ray node (operational: not part of the student id)."""

    num_cpus: float = Field(1, ge=0, description="CPUs reserved by the Ray task or job")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved by the Ray task or job")
    torch_threads: int | None = Field(
        None, ge=1, description="torch CPU threads (default: num_cpus, at least 1)")

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.num_cpus))


class LoraSpec(Config):
    """PEFT LoRA adapter settings; the adapter is merged into the saved model after training."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ScratchModel(Config):
    """A randomly initialised Llama built from these sizes, with a byte-level BPE tokenizer trained
    on the training data itself (digits are single tokens, so arithmetic stays learnable)."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=8)
    vocab_size: int = Field(512, ge=300, description="upper bound; BPE stops when merges run out")

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchModel:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads "
                             f"{self.num_heads}")
        return self


Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr"]


class Recipe(Config):
    """One way to train a student. Defaults are the GPU ``sft`` setup (see the module doc)."""

    name: str | None = Field(None, description="label only (operational)")
    kind: Literal["sft", "dpo"] = "sft"
    base_model: str = Field(
        "meta-llama/Llama-3.1-8B",
        description="hub id, local folder, 'smollm2' (embedded), or 'scratch' (see `scratch`)")
    scratch: ScratchModel | None = None
    lora: LoraSpec | None = Field(None, description="None: full fine-tuning")
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(
        None, ge=0, description="stop after this many optimizer steps; 0: none (the model as "
        "initialised: for a scratch model, random weights with a tokenizer trained on the data, "
        "which is how a suite evaluates an untrained scratch base)")
    learning_rate: float = Field(1e-5, gt=0)
    batch_size: int = Field(2, ge=1, description="per device")
    grad_accum: int = Field(32, ge=1)
    max_length: int = Field(4096, ge=8, description="tokens per example (longer are truncated)")
    seed: int = 42
    scheduler: Scheduler = "cosine"
    warmup: float = Field(0.03, ge=0, description="fraction of steps (< 1) or a step count")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 (else float16) on CUDA, float32 on CPU")
    assistant_only_loss: bool = Field(True, description="SFT: loss on assistant tokens only")
    chat_template: str = Field(
        "auto", description="auto, model, chatml, llama3, generic, or a Jinja template with "
        "{% generation %} markers")
    beta: float = Field(0.1, gt=0, description="DPO: strength of the KL penalty")
    dpo_loss: str = Field("sigmoid", description="DPO: TRL loss_type")
    sft_weight: float = Field(
        0.0, ge=0, description="DPO: weight of an NLL (SFT) loss on the chosen side added to the "
        "DPO loss (RPO, Pang et al. 2024; Llama 3's DPO). DPO alone only separates the two "
        "sides, so where they share a format it cannot teach one: a student far from the "
        "data's format needs this")
    min_pair_weight: float | None = Field(
        None, ge=0, description="DPO: train only on pairs whose weight (the confidence a pair "
        "method records: a rating gap, a reward model's Bradley-Terry probability, a constraint "
        "reward gap) is at least this; pairs without a weight are left out too. None: every pair")
    gradient_checkpointing: bool = Field(True, description="operational: memory for compute")
    logging_steps: int = Field(10, ge=1, description="operational")
    resources: Resources = Field(default_factory=lambda: Resources(num_cpus=8, num_gpus=1))

    @model_validator(mode="after")
    def _pair_weights(self) -> Recipe:
        if self.min_pair_weight is not None and self.kind != "dpo":
            raise ValueError("min_pair_weight filters preference pairs: it needs kind: dpo")
        return self

    @model_validator(mode="after")
    def _scratch(self) -> Recipe:
        if self.base_model == SCRATCH and self.scratch is None:
            self.scratch = ScratchModel()
        elif self.scratch is not None and self.base_model != SCRATCH:
            raise ValueError(f"`scratch` sizes need base_model: scratch (got {self.base_model!r})")
        return self

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset(
        {"name", "resources", "logging_steps", "gradient_checkpointing"})

    def semantic(self) -> dict[str, Any]:
        """What changes the trained weights: the recipe minus operational fields, minus values
        equal to the class defaults (so a new field with a default keeps old ids; changing a
        default's value needs a ``STUDENT_VERSION`` bump instead)."""
        return self.model_dump(mode="json", exclude_defaults=True, exclude=set(self.OPERATIONAL))

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{self.base_model}"


_CPU = {"gradient_checkpointing": False, "dtype": "float32", "warmup": 0.0}

PRESETS: dict[str, dict[str, Any]] = {
    "sft": {"name": "sft"},
    "dpo": {"name": "dpo", "kind": "dpo", "base_model": "meta-llama/Llama-3.1-8B-Instruct",
            "epochs": 1.0, "learning_rate": 5e-7, "beta": 0.1, "max_length": 2048,
            "batch_size": 1, "grad_accum": 64},
    "tiny-llama": {"name": "tiny-llama", "base_model": SCRATCH, "epochs": 6.0,
                   "learning_rate": 2e-3, "batch_size": 64, "grad_accum": 1, "max_length": 128,
                   "seed": 0, "logging_steps": 5, "resources": {"num_cpus": 1}, **_CPU},
    "tiny-llama-dpo": {"name": "tiny-llama-dpo", "kind": "dpo", "base_model": SCRATCH,
                       "epochs": 1.0, "learning_rate": 1e-3, "batch_size": 8, "grad_accum": 1,
                       "max_length": 128, "seed": 0, "logging_steps": 1,
                       "resources": {"num_cpus": 1}, **_CPU},
    "smollm2-lora": {"name": "smollm2-lora", "base_model": "smollm2",
                     "lora": {"r": 8, "alpha": 16, "dropout": 0.05,
                              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                     "epochs": 1.0, "learning_rate": 2e-4, "batch_size": 8, "grad_accum": 1,
                     "max_length": 512, "seed": 0, "logging_steps": 1,
                     "resources": {"num_cpus": 2}, **_CPU},
    "smollm2-lora-dpo": {"name": "smollm2-lora-dpo", "kind": "dpo", "base_model": "smollm2",
                         "lora": {"r": 8, "alpha": 16, "dropout": 0.05,
                                  "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                         "epochs": 1.0, "learning_rate": 5e-5, "batch_size": 4, "grad_accum": 1,
                         "max_length": 512, "seed": 0, "logging_steps": 1,
                         "resources": {"num_cpus": 2}, **_CPU},
}


def load_recipe(spec: str | Path | Recipe | dict[str, Any] = "tiny-llama",
                **overrides: Any) -> Recipe:
    """A recipe from a preset name, a YAML file, a dict or a Recipe; ``overrides`` (None skipped,
    dicts merged one level deep) go on top. A YAML file may start from a preset with
    ``preset: tiny-llama`` and override any field."""
    if isinstance(spec, Recipe):
        base: dict[str, Any] = spec.model_dump(exclude_unset=True)
    elif isinstance(spec, dict):
        base = _from_mapping(dict(spec), "recipe")
    elif str(spec).endswith((".yaml", ".yml", ".json")):
        base = _from_file(Path(spec))
    elif str(spec) in PRESETS:
        base = dict(PRESETS[str(spec)])
    else:
        raise ConfigError(f"unknown recipe {str(spec)!r}: use a preset ({', '.join(PRESETS)}) "
                          "or a .yaml file")
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            old = base.get(key)
            old = old.model_dump(exclude_unset=True) if isinstance(old, BaseModel) else old
            base[key] = {**(old or {}), **{k: v for k, v in value.items() if v is not None}}
        else:
            base[key] = value
    try:
        return Recipe.model_validate(base)
    except ValidationError as e:
        raise ConfigError(f"bad recipe: {validation_message(e)}") from None


def _from_file(path: Path) -> dict[str, Any]:
    from datagen_core.sources import read_yaml_mapping

    return _from_mapping(read_yaml_mapping(path, "recipe", "a mapping of recipe fields"),
                         str(path))


def _from_mapping(data: dict[str, Any], where: str) -> dict[str, Any]:
    preset = data.pop("preset", None)
    if preset is None:
        return data
    if preset not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    merged = dict(PRESETS[preset])
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
