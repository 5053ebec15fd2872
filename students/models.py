"""Base models and tokenizers for students, and the chat templates they are trained with.

Assistant-only loss needs a chat template with ``{% generation %}`` markers (transformers derives
the assistant-token mask from them). Most shipped templates have none, so a student is trained
with a *training template* and saved with that same template: whatever later loads the student
(the ``hf`` backend, vLLM) formats prompts exactly as in training. The template's end-of-turn
token becomes the tokenizer's eos token so generation stops where training taught it to.

torch, transformers and tokenizers are imported inside functions only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from datagen_core.errors import BackendError, ConfigError
from students.recipes import Recipe, ScratchModel

log = logging.getLogger("datagen.students")

# ChatML (SmolLM2, Qwen and the scratch tokenizer): the whole assistant turn, end token included,
# is inside the generation block, so the student learns to stop.
CHATML = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Llama 3 headers (the base Llama-3.1-8B tokenizer has these special tokens).
LLAMA3 = (
    "{%- for message in messages %}"
    "{%- if loop.index0 == 0 %}{{- bos_token }}{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Any tokenizer: plain role headers, each turn closed by the eos token.
GENERIC = (
    "{%- for message in messages %}"
    "{{- '### ' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + eos_token }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- message['content'] + '\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '### assistant\\n' }}{%- endif %}"
)

TEMPLATES = {"chatml": (CHATML, "<|im_end|>"), "llama3": (LLAMA3, "<|eot_id|>"),
             "generic": (GENERIC, None)}

SCRATCH_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def has_generation_markers(template: Any) -> bool:
    return isinstance(template, str) and "generation" in template and "endgeneration" in template


def apply_training_template(tok: Any, choice: str) -> str | None:
    """Give ``tok`` a chat template with generation markers; return its end-of-turn token.

    ``auto`` keeps a template that already has markers, else uses TRL's training variant of a
    known template, else ChatML when the vocabulary has its tokens, else Llama 3's, else a
    generic one that ends turns with eos. ``model`` keeps the model's template as is.
    """
    vocab = tok.get_vocab()
    current = tok.chat_template if isinstance(tok.chat_template, str) else None
    if choice == "model":
        if not current:
            raise ConfigError("chat_template: model, but the base model's tokenizer has none")
        return None
    if choice not in ("auto", *TEMPLATES):
        if "{%" not in choice:
            raise ConfigError(f"unknown chat_template {choice!r}: use auto, model, chatml, "
                              "llama3, generic or a Jinja template")
        tok.chat_template = choice
        return None
    if choice == "auto":
        if has_generation_markers(current):
            return None
        if current:
            patched = _trl_training_template(tok)
            if patched:
                tok.chat_template = patched
                return None
        if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
            choice = "chatml"
        elif "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
            choice = "llama3"
        else:
            choice = "generic"
    template, end = TEMPLATES[choice]
    if end is not None and end not in vocab:
        raise ConfigError(f"chat_template: {choice} needs the token {end!r}, which this "
                          "tokenizer lacks: use generic")
    tok.chat_template = template
    return end


def _trl_training_template(tok: Any) -> str | None:
    try:
        from trl.chat_template_utils import get_training_chat_template

        return get_training_chat_template(tok)
    except (ImportError, ValueError, TypeError):
        return None


def train_tokenizer(texts: Iterable[str], spec: ScratchModel) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``: digits are split one per token, the
    ChatML tokens are special, ``<|im_end|>`` is eos and ``<|endoftext|>`` pads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, special_tokens=SCRATCH_SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def scratch_model(spec: ScratchModel, tok: Any, max_length: int, seed: int) -> Any:
    """A freshly initialised LlamaForCausalLM sized by ``spec`` (tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=max(max_length, 4096),
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def torch_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def load_base(recipe: Recipe, texts: Iterable[str]) -> tuple[Any, Any]:
    """The model and tokenizer a student starts from, with its training chat template set.

    ``texts`` (all strings of the training data) are read only for a scratch model's tokenizer.
    """
    import transformers

    if not log.isEnabledFor(logging.DEBUG):
        transformers.utils.logging.disable_progress_bar()
    if recipe.scratch is not None:
        tok = train_tokenizer(texts, recipe.scratch)
        model = scratch_model(recipe.scratch, tok, recipe.max_length, recipe.seed)
    else:
        from generators.backends.hf import resolve_model_path

        path = resolve_model_path(recipe.base_model)
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype(recipe.dtype))
        except (OSError, ValueError) as e:
            raise BackendError(f"student base model {recipe.base_model!r}: cannot load "
                               f"{path!r}: {e}") from None
    end = apply_training_template(tok, recipe.chat_template)
    set_eos(model, tok, end)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def set_eos(model: Any, tok: Any, end: str | None) -> None:
    """Make the template's end-of-turn token the eos of the tokenizer and the model's configs
    (kept alongside the old eos ids in the generation config, any of which stops generation)."""
    if end is None or tok.eos_token == end:
        return
    old = model.generation_config.eos_token_id
    old_ids = [] if old is None else [old] if isinstance(old, int) else list(old)
    tok.eos_token = end
    eos_id = tok.convert_tokens_to_ids(end)
    model.config.eos_token_id = eos_id
    model.generation_config.eos_token_id = [eos_id, *[i for i in old_ids if i != eos_id]]
