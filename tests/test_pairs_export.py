"""Pair export: TRL's DPOTrainer takes the file as is; filters, formats, Hub push and the CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app
from datagen.pairs import export_pairs, load_pairs, pair_counts
from datagen_core.errors import BackendError, ConfigError, InputError, NotFoundError
from datagen_core.records import GeneratorSpec
from generators.backends.fake import FakeBackend

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _responder(request):
    m = request.meta
    if "order" in m:  # the judge: agrees, except it calls focus's original>corrupted a tie
        if m["attribute"] == "focus" and m["kind"] == "original>corrupted":
            return "Score A: 3\nScore B: 3\nBetter: A" if m["order"] == "ab" else (
                "Score A: 3\nScore B: 3\nBetter: B")
        gap = 1 if m["kind"] == "original>corrupted" else 3
        hi, lo = 2 + gap, 2
        return (f"Score A: {hi}\nScore B: {lo}\nBetter: A" if m["order"] == "ab" else
                f"Score A: {lo}\nScore B: {hi}\nBetter: B")
    return (f"Original: When did the {m['attribute']} issue start for {m['row_id']}?\n"
            f"Enhanced: When exactly did the {m['attribute']} problem start?\n"
            f"Corrupted: Things, stuff, {m['attribute']}, when?")


@pytest.fixture
def run_id() -> str:
    spec = GeneratorSpec.parse("fake:gen", limits={"max_retries": 0})
    res = api.generate(spec, None, n=2, method="attribute-variants",
                       method_args={"attributes": ["clarity", "focus"]},
                       backend=FakeBackend(spec, responder=_responder), progress=False)
    assert len(res.pairs) == 12
    return res.run_id


def test_filters_and_counts(run_id: str):
    assert len(load_pairs(run_id[:8])) == 12
    assert {p.attribute for p in load_pairs(run_id, attribute="focus")} == {"focus"}
    assert sorted(p.margin for p in load_pairs(run_id, attribute="focus")) == [0, 0] + [3] * 4
    assert len(load_pairs(run_id, min_margin=1)) == 10  # focus's two ties are dropped
    assert len(load_pairs(run_id, min_margin=3)) == 8
    counts = {r["attribute"]: r for r in pair_counts(run_id)}
    assert counts["clarity"]["n"] == 6 and counts["clarity"]["min_margin"] == 1.0
    with pytest.raises(InputError, match="no pairs left"):
        load_pairs(run_id, attribute="accuracy")


def test_formats_and_errors(run_id: str, tmp_path: Path):
    import datasets

    trl = export_pairs(run_id, tmp_path / "p.jsonl", attribute="clarity")
    rows = [orjson.loads(x) for x in Path(trl).read_bytes().splitlines()]
    assert len(rows) == 6 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    assert rows[0]["chosen"][0]["role"] == "assistant"

    full = export_pairs(run_id, tmp_path / "full.jsonl", fmt="jsonl")
    first = orjson.loads(Path(full).read_bytes().splitlines()[0])
    assert first["evidence"]["ab"]["better"] == "A" and first["meta"]["kind"]

    pq = export_pairs(run_id, tmp_path / "p.parquet", fmt="parquet", min_margin=2)
    ds = datasets.load_dataset("parquet", data_files=str(pq), split="train")
    assert len(ds) == 8 and orjson.loads(ds[0]["evidence"])["ba"]["better"] == "B"

    hf = export_pairs(run_id, tmp_path / "hf", fmt="hf")
    assert len(datasets.load_from_disk(str(hf))) == 12

    with pytest.raises(ConfigError, match="unknown pairs format"):
        export_pairs(run_id, tmp_path / "x", fmt="csv")
    with pytest.raises(ConfigError, match="--out"):
        export_pairs(run_id, None)

    spec = GeneratorSpec.parse("fake", limits={"max_retries": 0})
    plain = api.generate(spec, None, n=1, progress=False)
    with pytest.raises(NotFoundError, match="no preference pairs"):
        export_pairs(plain.run_id, tmp_path / "none.jsonl")


def test_push_to_hub_calls_datasets(run_id: str, monkeypatch: pytest.MonkeyPatch):
    import datasets
    import huggingface_hub

    pushed = []

    def fake_push(self, repo_id, *args, **kwargs):
        pushed.append((repo_id, len(self), sorted(self.column_names)))

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", fake_push)
    # the dataset card (tests/test_hub_export.py checks what it says)
    monkeypatch.setattr(huggingface_hub.DatasetCard, "push_to_hub", lambda *a, **k: None)
    assert export_pairs(run_id, None, attribute="focus", push_to_hub="org/pairs") == "org/pairs"
    assert pushed == [("org/pairs", 6, ["attribute", "chosen", "evidence", "label_source",
                                        "margin", "meta", "pair_id", "prompt", "rejected",
                                        "weight"])]

    def failing(self, repo_id, *args, **kwargs):
        raise RuntimeError("401 Client Error: Unauthorized\nmore detail")

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", failing)
    with pytest.raises(BackendError, match=r"org/pairs\) failed: 401 Client Error"):
        export_pairs(run_id, None, push_to_hub="org/pairs")


def test_cli_list_and_export(run_id: str, tmp_path: Path):
    runner = CliRunner()
    r = runner.invoke(app, ["pairs", "list", run_id[:10]])
    assert r.exit_code == 0, r.output
    assert "clarity" in r.output and "focus" in r.output
    out = tmp_path / "cli.jsonl"
    r = runner.invoke(app, ["pairs", "export", run_id, "--format", "trl", "--out", str(out),
                            "--attribute", "focus", "--min-margin", "1"])
    assert r.exit_code == 0, r.output
    assert len(out.read_bytes().splitlines()) == 4
    r = runner.invoke(app, ["pairs", "export", run_id, "--out", str(out), "--format", "csv"])
    assert isinstance(r.exception, ConfigError)


def _tiny_model_and_tokenizer():
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["When did it start? Ask one follow-up question."] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                  pad_token="<|im_end|>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None))
    return model, tok


def test_trl_export_trains_a_tiny_dpo_step(run_id: str, tmp_path: Path):
    import datasets

    model, tok = _tiny_model_and_tokenizer()
    from trl import DPOConfig, DPOTrainer

    path = export_pairs(run_id, tmp_path / "dpo.jsonl")
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(ds) == 12 and ds.column_names == ["prompt", "chosen", "rejected"]
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, report_to=[],
                     per_device_train_batch_size=4, save_strategy="no", logging_steps=1,
                     use_cpu=True, max_length=256)
    ref = copy.deepcopy(model)  # the model was built in memory: no path to load a reference from
    trainer = DPOTrainer(model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    prepared = trainer.train_dataset
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(prepared.column_names)
    row = prepared[0]
    assert row["prompt_ids"] and row["chosen_ids"] and row["rejected_ids"]
    assert row["chosen_ids"] != row["rejected_ids"]
    # the prompt is the chat-templated user turn ending with the assistant header
    assert tok.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert tok.decode(row["chosen_ids"]).startswith("When exactly")
    out = trainer.train()
    assert out.global_step == 1
