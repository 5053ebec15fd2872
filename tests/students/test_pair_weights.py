"""DPO recipes use the pair weights that pair methods record: ``min_pair_weight`` keeps the
pairs at least that confident, from a run's pairs.jsonl or any file with a weight column."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from datagen_core.errors import ConfigError, InputError
from datagen_core.workspace import Workspace
from students.recipes import load_recipe
from students.records import DataRef
from students.train import load_examples, resolve_data, student_id, train_student
from tests.generators.test_preference_pairs import run


def _pair(i: int, weight: float | None) -> dict:
    return {"prompt": [{"role": "user", "content": f"q{i}"}],
            "chosen": [{"role": "assistant", "content": f"good {i}"}],
            "rejected": [{"role": "assistant", "content": f"bad {i}"}], "weight": weight}


def _file(tmp_path: Path, weights: list[float | None]) -> DataRef:
    f = tmp_path / "pairs.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(_pair(i, w)) for i, w in enumerate(weights)))
    return DataRef(path=str(f), fingerprint="x", kind="dpo")


def test_min_pair_weight_keeps_confident_pairs(tmp_path: Path):
    ref = _file(tmp_path, [0.9, 0.2, None, 0.5])
    assert len(load_examples(ref)) == 4  # no threshold: every pair, weights ignored
    kept = load_examples(ref, min_pair_weight=0.5)
    assert [r["chosen"][0]["content"] for r in kept] == ["good 0", "good 3"]
    assert set(kept[0]) == {"prompt", "chosen", "rejected"}  # TRL's columns only
    with pytest.raises(InputError, match=r"no pair has weight >= 0.95 \(of 4; highest 0.9\)"):
        load_examples(ref, min_pair_weight=0.95)
    with pytest.raises(InputError, match="needs a 'weight' column, and no pair of 2 has one"):
        load_examples(_file(tmp_path, [None, None]), min_pair_weight=0.1)


def test_the_threshold_is_in_the_student_id_only_when_set():
    data = DataRef(path="/x", fingerprint="0123456789abcdef", kind="dpo")
    plain = load_recipe("tiny-llama-dpo")
    assert "min_pair_weight" not in plain.semantic()
    weighted = load_recipe("tiny-llama-dpo", min_pair_weight=0.5)
    assert weighted.semantic()["min_pair_weight"] == 0.5
    assert student_id(weighted, data) != student_id(plain, data)
    with pytest.raises(ConfigError, match="min_pair_weight filters preference pairs"):
        load_recipe("tiny-llama", min_pair_weight=0.5)
    with pytest.raises(ConfigError, match="min_pair_weight"):
        load_recipe("tiny-llama-dpo", min_pair_weight=-1)


def test_a_pairs_runs_weights_reach_the_dpo_loader(tmp_path: Path):
    """preference-pairs weights (margin / 4): p0 0.625, p2 0.125, p4 0.5."""
    res, _ = run(tmp_path)
    assert sorted(p.weight for p in res.pairs) == [0.125, 0.5, 0.625]
    ws = Workspace.resolve()
    ref = resolve_data(res.run_id, "dpo", ws)
    assert len(load_examples(ref, min_pair_weight=0.5)) == 2
    rec = train_student(load_recipe("tiny-llama-dpo", max_steps=0, min_pair_weight=0.5),
                        res.run_id, ws)
    assert rec.status == "finished" and rec.n_examples == 2
