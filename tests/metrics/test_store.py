"""The workspace database: migrations, the cross-run cache, and exports."""

from __future__ import annotations

from pathlib import Path

import duckdb

from datagen.api import load_spec
from datagen_core.records import GenResponse
from metrics import migrations
from metrics.store import Store

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_run_once_and_new_ones_upgrade_an_old_workspace(tmp_path, monkeypatch):
    db = tmp_path / "datagen.duckdb"
    shipped = [v for v, _, _ in migrations.MIGRATIONS]
    assert shipped == list(range(1, len(shipped) + 1))  # numbered, none skipped
    assert Store(db).migrate() == shipped
    assert Store(db).migrate() == shipped  # idempotent
    nxt = len(shipped) + 1
    import metrics.store as store_mod

    monkeypatch.setattr(store_mod, "MIGRATIONS", [
        *migrations.MIGRATIONS, (nxt, "notes", "CREATE TABLE notes (run_id VARCHAR, note VARCHAR)")
    ])
    assert Store(db).migrate() == [*shipped, nxt]
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*) FROM notes").fetchone() == (0,)


def test_cache_returns_only_successful_answers(tmp_path):
    s = Store(tmp_path / "d.duckdb")
    s.ingest_responses("run1", [
        GenResponse(key="k-ok", text="hello", usage={"prompt_tokens": 3, "completion_tokens": 1},
                    raw={"id": 1}, created_at=1.0),
        GenResponse(key="k-err", error={"kind": "invalid", "type": "http_400", "message": "x"}),
    ])
    got = s.get_many(["k-ok", "k-err", "k-missing"])
    assert set(got) == {"k-ok"}
    assert got["k-ok"].text == "hello" and got["k-ok"].usage.prompt_tokens == 3
    assert got["k-ok"].raw == {"id": 1}


def test_reingesting_a_run_replaces_its_rows(tmp_path):
    s = Store(tmp_path / "d.duckdb")
    s.ingest_responses("r", [GenResponse(key="a", text="1"), GenResponse(key="b", text="2")])
    s.ingest_responses("r", [GenResponse(key="a", text="1")])
    with s.connect() as con:
        assert con.execute("SELECT count(*) FROM requests WHERE run_id='r'").fetchone() == (1,)


def test_shipped_generator_configs_are_valid():
    files = sorted((ROOT / "configs" / "generators").glob("*.yaml"))
    assert files
    for f in files:
        spec = load_spec(str(f))
        assert spec.provider and spec.model
