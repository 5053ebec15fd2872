"""The viewer's queries: pages cut in DuckDB by key (a 200,000-row run pages like a small one,
without its rows in Python), a row found with the prompt and response behind it, labels, and a
read-only store that refuses to write."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from datagen_core.records import GenResponse, Instance, Message
from datagen_core.workspace import Workspace
from metrics import browse, labels
from metrics.store import Store

BIG = 200_000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A run of 200,000 rows, every tenth rejected (two kinds of reason), written by SQL."""
    store = Store(Workspace(tmp_path_factory.mktemp("big")).ensure().db_path)
    with store.connect() as con:
        con.execute(
            "INSERT INTO instances SELECT 'big', i, 'id' || i, to_json([{'role': 'user', "
            "'content': 'question ' || i || ' ' || repeat('word ', 20)}, {'role': 'assistant', "
            "'content': 'answer ' || i}]), i % 10 <> 0, CASE WHEN i % 10 <> 0 THEN NULL "
            "WHEN i % 20 = 0 THEN 'duplicate of #' || (i + 1) ELSE 'no final answer' END, "
            "'{}' FROM range(?) t(i)", [BIG])
    return store


def test_a_large_run_pages_by_key_in_the_database(big: Store) -> None:
    first = browse.instance_page(big, "big", limit=50)
    assert [r["idx"] for r in first.rows][:3] == [1, 2, 3] and len(first.rows) == 50
    assert first.total == BIG * 9 // 10 and first.start == 0 and first.before is None
    assert first.rows[0]["first"].startswith("question 1 ") and first.rows[0]["last"] == "answer 1"

    tracemalloc.start()
    t0 = time.perf_counter()
    deep = browse.instance_page(big, "big", after=150_000, limit=50)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert deep.rows[0]["idx"] == 150_001 and deep.start == 135_000
    assert peak < 2_000_000, peak  # one page, not the run's ~30 MB of messages
    assert seconds < 5, seconds

    back = browse.instance_page(big, "big", before=deep.rows[0]["idx"], limit=50)
    assert back.rows[-1]["idx"] == 149_999 and back.after == 149_999 and back.start == 134_950
    last = browse.instance_page(big, "big", after=BIG - 30, limit=50)
    assert last.after is None and last.rows[-1]["idx"] == BIG - 1
    assert browse.instance_page(big, "big", before=5, limit=50).rows[0]["idx"] == 1  # full page


def test_filters_by_reason_kind_and_text(big: Store) -> None:
    dup = browse.instance_page(big, "big", valid=False, reason="duplicate of", limit=5)
    assert dup.total == BIG // 20 and all(r["reject_reason"].startswith("duplicate of #")
                                          for r in dup.rows)
    found = browse.instance_page(big, "big", valid=None, search="QUESTION 12345 word", limit=5)
    assert [r["idx"] for r in found.rows] == [12345] and found.total == 1


def test_a_row_comes_with_its_prompt_and_raw_response(tmp_path) -> None:
    store = Store(Workspace(tmp_path).ensure().db_path)
    sent = [[Message(role="user", content=f"Solve: {q}")] for q in ("1+1", "2+2")]
    store.ingest_responses("r", [GenResponse(key=f"k{i}", text=f"raw {i}") for i in range(2)],
                           sent)
    store.write_instances("r", [
        Instance(index=0, instance_id="a", messages=[Message(role="user", content="2+2"),
                                                     Message(role="assistant", content="4")],
                 meta={"key": "k1"}),
        Instance(index=1, instance_id="b", messages=[Message(role="user", content="made")],
                 valid=False, reject_reason="no answer")])
    row = browse.instance_detail(store, "r", 0)
    assert row is not None and row["response"] == "raw 1" and row["request_idx"] == 1
    assert row["prompt"] == [{"role": "user", "content": "Solve: 2+2"}]
    no_key = browse.instance_detail(store, "r", 1)
    assert no_key is not None and no_key["request_idx"] is None and no_key["prompt"] is None
    assert browse.instance_detail(store, "r", 7) is None
    assert browse.neighbours(store, "instances", "r", 0) == (None, 1)


def test_labels_are_stored_replaced_and_resume_at_the_first_gap(tmp_path) -> None:
    from datagen import api
    from datagen_core.records import GeneratorSpec
    from generators.backends.fake import FakeBackend
    from tests.test_pairs_export import _responder

    spec = GeneratorSpec.parse("fake:gen", limits={"max_retries": 0})
    run = api.generate(spec, None, n=2, method="attribute-variants",
                       method_args={"attributes": ["clarity", "focus"]},
                       backend=FakeBackend(spec, responder=_responder), progress=False,
                       workspace=tmp_path).run_id
    store = Store(tmp_path / "datagen.duckdb", read_only=True)
    pairs = store.read_pairs(run)
    assert labels.first_unlabelled(store, run, "ann") == 0
    for p, label in zip(pairs[:2], ("chosen", "tie")):
        labels.write_label(store, run_id=run, pair_id=p.pair_id, idx=p.index, annotator="ann",
                           label=label, shown_first="rejected")
    labels.write_label(store, run_id=run, pair_id=pairs[0].pair_id, idx=0, annotator="ann",
                       label="rejected", shown_first="chosen")  # changed its mind
    assert labels.first_unlabelled(store, run, "ann") == 2
    assert labels.first_unlabelled(store, run, "someone else") == 0
    assert labels.label_counts(store, run, "ann") == {
        "pairs": 12, "labelled": 2, "chosen": 0, "rejected": 1, "tie": 1}
    assert [(x["idx"], x["label"]) for x in api.pair_labels(run, workspace=tmp_path)] == [
        (0, "rejected"), (1, "tie")]
    page = browse.pair_page(store, run, annotator="ann", limit=3)
    assert [p["label"] for p in page.rows] == ["rejected", "tie", None]
    assert page.rows[0]["chosen"][0]["role"] == "assistant"
    with pytest.raises(Exception, match="label"):
        labels.write_label(store, run_id=run, pair_id="x", idx=0, annotator="a", label="A",
                           shown_first="chosen")


def test_a_read_only_store_cannot_write(tmp_path) -> None:
    import duckdb

    Store(Workspace(tmp_path).ensure().db_path).migrate()
    viewer = Store(tmp_path / "datagen.duckdb", read_only=True)
    assert browse.run_rows(viewer) == []
    with pytest.raises(duckdb.Error, match="read-only"):
        viewer.write_instances("r", [])
