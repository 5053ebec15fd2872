"""``datagen select`` / ``datagen.api.select``: a selection is a run that records its parents,
is found again instead of redone, embeds each row once (the cache), exports and trains like any
run, and refuses bad input in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from datagen import api
from datagen_core.errors import ConfigError, DatagenError
from datagen_core.records import RunManifest
from datagen_core.workspace import Workspace
from tests.students.test_selection import planted_pool
from tests.tiny_embedder import build_tiny_embedder

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


@pytest.fixture
def pool_run(tmp_path: Path) -> tuple[str, list[str], set[int]]:
    """A finished run (the fake backend answers each planted-pool prompt) and the targets."""
    texts, targets, planted = planted_pool()
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": t}) + b"\n" for t in texts))
    result = api.generate("fake", str(src), progress=False)
    return result.run_id, targets, planted


def test_rds_selection_is_a_run_with_parents_found_again_and_cached(
        tiny: Path, pool_run: tuple[str, list[str], set[int]], tmp_path: Path):
    run_id, targets, planted = pool_run
    target = tmp_path / "target.jsonl"
    # target items with answers in the pool's style (the paper embeds target examples whole)
    target.write_bytes(b"".join(orjson.dumps({"instruction": t, "response": f"fake reply to: {t}"})
                                + b"\n" for t in targets))
    sel = api.select(run_id, k=6, target=str(target), model=str(tiny))
    assert not sel.reused and sel.embedded == 46 + 3 and sel.cached == 0
    texts, _, _ = planted_pool()
    rows = api.export_run(sel.run_id, tmp_path / "picked.jsonl").read_bytes().splitlines()
    picked = {orjson.loads(r)["messages"][0]["content"] for r in rows}
    assert picked == {texts[i] for i in planted}  # the planted near-target rows, all six

    ws = Workspace.resolve(None)
    manifest = RunManifest.model_validate_json((ws.run_dir(sel.run_id) / "run.json").read_text())
    assert manifest.method == "select" and manifest.parents == [run_id]
    assert manifest.method_args["k"] == 6 and manifest.method_args["target"] == [str(target)]
    assert manifest.generator.display == "fake+rds"
    row = next(r for r in api.list_runs() if r["run_id"] == sel.run_id)
    assert row["status"] == "finished" and row["method"] == "select"
    shown = api.show_run(sel.run_id)
    assert shown["n_valid"] == 6

    out = api.export_run(sel.run_id, tmp_path / "sel.jsonl")
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(rows) == 6 and all(r["meta"]["selection"]["from"] == run_id for r in rows)
    assert rows[0]["messages"][0]["role"] == "user"

    from students.train import resolve_data

    ref = resolve_data(sel.run_id[:10], "sft", ws)  # a student trains on it like on any run
    assert ref.run_id == sel.run_id and Path(ref.path).name == "data.parquet"

    again = api.select(run_id, k=6, target=str(target), model=str(tiny))
    assert again.reused and again.run_id == sel.run_id
    other = api.select(run_id, k=9, target=str(target), model=str(tiny))
    assert other.run_id != sel.run_id and other.embedded == 0 and other.cached == 49


def test_random_selection_and_bad_input(pool_run: tuple[str, list[str], set[int]]):
    run_id, _, _ = pool_run
    sel = api.select(run_id, k=5, method="random", seed=1)
    assert len({p.index for p in sel.picks}) == 5
    assert api.select(run_id, k=5, method="random", seed=2).run_id != sel.run_id
    with pytest.raises(ConfigError, match="rds needs a target set"):
        api.select(run_id, k=5)
    with pytest.raises(ConfigError, match="k=100 rows from a pool of 46"):
        api.select(run_id, k=100, method="random")
    with pytest.raises(ConfigError, match="method"):
        api.select(run_id, k=5, method="best")
    with pytest.raises(DatagenError, match="no run 'nosuchrun'"):
        api.select("nosuchrun", k=1, method="random")


def test_cli_select_prints_the_new_run_and_bad_input_is_one_line(
        pool_run: tuple[str, list[str], set[int]]):
    run_id, _, _ = pool_run
    cmd = [sys.executable, "-m", "datagen.cli", "-q", "select", run_id[:8], "-k", "4", "-m",
           "random"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 of 46 rows by random" in r.stdout
    bad = subprocess.run([*cmd[:-4], "-k", "4"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "rds needs a target set" in lines[0], bad.stderr
