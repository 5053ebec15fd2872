"""Hub pushes with a dataset card, for SFT runs (``datagen export --push-to-hub``) and pairs:
the Hub is replaced by recorders of what ``datasets`` and ``huggingface_hub`` would send."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app
from datagen.pairs import export_pairs
from datagen_core.errors import BackendError, ConfigError
from datagen_core.records import GeneratorSpec
from datagen_core.workspace import Workspace
from generators.backends.fake import FakeBackend
from metrics.store import Store
from tests.generators.test_preference_pairs import run as pairs_run
from tests.metrics.planting import plant_benchmark

TOKEN = "hf_" + "s3cr3tT0kenValue" * 2


class Hub:
    """What reached the 'Hub': dataset pushes (repo, rows, columns) and cards (repo, text)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import datasets
        import huggingface_hub

        self.data: list[tuple[str, int, list[str]]] = []
        self.cards: list[tuple[str, str, str | None]] = []
        hub = self

        def push_data(ds, repo_id, *args, **kwargs):
            hub.data.append((repo_id, len(ds), sorted(ds.column_names)))

        def push_card(card, repo_id, *args, repo_type=None, **kwargs):
            hub.cards.append((repo_id, str(card), repo_type))

        monkeypatch.setattr(datasets.Dataset, "push_to_hub", push_data)
        monkeypatch.setattr(huggingface_hub.DatasetCard, "push_to_hub", push_card)
        monkeypatch.setenv("HF_TOKEN", TOKEN)

    @property
    def card(self) -> str:
        return self.cards[-1][1]

    def header(self) -> dict:
        return yaml.safe_load(self.card.split("---")[1])


@pytest.fixture
def sft_run(tmp_path: Path) -> str:
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps({"prompt": p}) for p in [
        "Name a colour.", "Name a fruit.", "Name a colour."]))
    spec = GeneratorSpec.parse("fake:gen", limits={"max_retries": 0})
    res = api.generate(spec, str(src), backend=FakeBackend(
        spec, responder=lambda q: f"An answer to: {q.messages[-1].content}"), progress=False,
        method_args={"system": "Be brief. Pool spec openai:x@http://user:pw@10.0.0.1/v1"})
    return res.run_id


def test_push_run_sends_rows_and_a_card_naming_the_run(sft_run: str, monkeypatch):
    hub = Hub(monkeypatch)
    assert api.push_run(sft_run[:8], "org/sft") == "org/sft"
    assert hub.data == [("org/sft", 2, ["index", "instance_id", "messages", "meta"])]
    (repo, card, repo_type), = hub.cards
    assert (repo, repo_type) == ("org/sft", "dataset")
    head = hub.header()
    assert head["datagen"] == {"run_id": sft_run, "generator": "fake:gen", "method": "prompt",
                               "method_version": api.show_run(sft_run)["method_version"],
                               "decontaminated": True, "pgr": None}
    assert head["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}]}]
    assert set(head["tags"]) >= {"synthetic", "datagen", "sft"}
    assert head["size_categories"] == ["n<1K"]
    assert f"| run | `{sft_run}` |" in card and "| generator | `fake:gen` |" in card
    assert "| method | `prompt` version" in card
    assert "| seed set | prompts.jsonl (a local file) |" in card  # no local folders on a card
    # the third prompt repeats the first: curation counts and decontamination are on the card
    assert "- rows: 3 input, 2 kept, 1 exact" in card
    assert "- decontaminated: yes, against " in card
    assert "Not measured: no student trained on this run" in card
    assert '"system": "Be brief.' in card  # method arguments, as JSON
    assert "user:pw" not in card and TOKEN not in card  # credentials never reach a card

    hub.data.clear()
    api.push_run(sft_run, "org/sft", card_only=True)
    assert hub.data == [] and len(hub.cards) == 2


def test_a_failed_push_is_one_line_without_the_token(sft_run: str, monkeypatch):
    import huggingface_hub

    Hub(monkeypatch)

    def failing(card, repo_id, *args, **kwargs):
        raise RuntimeError(f"401 Unauthorized for token {TOKEN}\nmore detail")

    monkeypatch.setattr(huggingface_hub.DatasetCard, "push_to_hub", failing)
    with pytest.raises(BackendError) as e:
        api.push_run(sft_run, "org/sft")
    msg = str(e.value)
    assert "\n" not in msg and TOKEN not in msg and "[REDACTED]" in msg
    assert msg.startswith("push to the Hub (org/sft) failed: 401 Unauthorized")
    assert msg.endswith("(the data is pushed; pushing the card is what failed)")


def test_the_card_carries_the_pgr_of_a_scored_student(monkeypatch):
    store = Store(Workspace.resolve().ensure().db_path)
    runs = plant_benchmark(store, n_items=30)
    hub = Hub(monkeypatch)
    rid = runs["openai:gpt-4o-mini|math"]
    api.push_run(rid, "org/scored")
    pgr = next(c for c in api.leaderboard() if c["run_id"] == rid)["pgr"]
    assert hub.header()["datagen"]["pgr"] == pytest.approx(pgr)
    assert f"- PGR {pgr:.1f} (95% CI " in hub.card
    assert "base `base-model`, reference `reference-model`" in hub.card
    assert "- no curation record" in hub.card


def test_cli_export_push_and_card_only(sft_run: str, tmp_path: Path, monkeypatch):
    hub = Hub(monkeypatch)
    runner = CliRunner()
    out = tmp_path / "rows.jsonl"
    r = runner.invoke(app, ["export", sft_run, "-o", str(out), "--push-to-hub", "org/cli"])
    assert r.exit_code == 0, r.output
    assert len(out.read_bytes().splitlines()) == 2 and hub.data[0][:2] == ("org/cli", 2)
    assert "pushed the rows and a dataset card" in r.output and TOKEN not in r.output
    r = runner.invoke(app, ["export", sft_run, "--push-to-hub", "org/cli", "--card-only"])
    assert r.exit_code == 0 and len(hub.data) == 1 and len(hub.cards) == 2
    r = runner.invoke(app, ["export", sft_run])
    assert isinstance(r.exception, ConfigError) and "--push-to-hub" in str(r.exception)
    r = runner.invoke(app, ["export", sft_run, "-o", str(out), "--card-only"])
    assert isinstance(r.exception, ConfigError)


def test_pairs_push_and_hf_export_carry_the_card(tmp_path: Path, monkeypatch):
    res, _ = pairs_run(tmp_path)
    hub = Hub(monkeypatch)
    export_pairs(res.run_id, None, push_to_hub="org/pairs", min_margin=1)
    assert hub.data[0][:2] == ("org/pairs", 2)
    head = hub.header()
    assert head["datagen"]["method"] == "preference-pairs"
    assert set(head["tags"]) >= {"dpo", "preference"}
    assert "2 preference pairs: `prompt`, `chosen`, `rejected`" in hub.card
    assert "This export: filtered: min_margin=1." in hub.card
    assert "- pairs: 3 input, 3 kept" in hub.card

    folder = tmp_path / "hf-pairs"
    export_pairs(res.run_id, folder, fmt="hf")
    readme = (folder / "README.md").read_text()
    assert f"| run | `{res.run_id}` |" in readme and "configs" not in readme
    import datasets

    assert len(datasets.load_from_disk(str(folder))) == 3  # the card does not disturb the data
