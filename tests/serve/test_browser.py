"""The web app in a real browser: headless Chromium (the system package, driven by Playwright)
opens each page of ``datagen serve`` over a workspace built by the tests and checks what a user
would look for: the leaderboard's first row and its plots, a rejected row's reason, the prompt
and raw response behind a row, two generators side by side, a pair's two sides, three pairs
labelled with the keyboard and stored, model output holding ``<script>`` shown as text, and a
new run showing up on reload.

Chromium is a system package (CI: ``apt-get install -y chromium``); without it these tests skip
with that hint. Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from datagen import api
from datagen.serve.labelling import chosen_first
from metrics.store import Store
from tests.serve.conftest import Server
from tests.serve.workspace import NO_ANSWER, XSS, generate, pairs_responder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get update && apt-get install -y "
    "chromium (CI installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox",
                                                             "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh tab; any script error or failed request on it fails the test."""
    context = browser.new_context(base_url=server.url)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    assert problems == []


def cells(row: Any) -> list[str]:
    return [c.strip() for c in row.locator("td").all_inner_texts()]


def test_leaderboard_shows_the_ranking_and_its_plots(page: Any, server: Server) -> None:
    page.goto("/")
    first = page.locator("#overall tr").nth(1)  # row 0 is the header
    assert cells(first)[:2] == ["1", server.built.leader]
    assert page.locator("#overall td.sep span").count() >= 1  # a "not separable" mark
    page.wait_for_function("document.body.dataset.ready === '1' || !!document.body.dataset.errors",
                           timeout=30_000)
    body = page.evaluate("({...document.body.dataset})")
    assert "errors" not in body, body
    assert body["plots"] == body["expected"] and int(body["expected"]) >= 4
    assert page.locator("table.cell").count() == 2  # response-generation x (math, code)


def test_a_rejected_row_with_its_reason_prompt_and_raw_response(page: Any,
                                                                 server: Server) -> None:
    page.goto("/runs")
    page.click(f"a[href='/runs/{server.built.alpha}']")
    assert "no final answer" in page.inner_text("#rejections")
    page.check("input[name=show][value=rejected]")
    page.click("form.filters button")
    rows = page.locator("#rows tr")
    assert rows.count() == 2  # the header and the one rejected row
    assert "no final answer" in cells(rows.nth(1))[-1]
    rows.nth(1).locator("a").click()
    assert "no final answer" in page.inner_text("#reason")
    assert page.inner_text("#response").strip() == NO_ANSWER
    assert "Problem: What is 10 - 3?" in page.inner_text("#prompt")  # the prompt sent


def test_model_output_holding_script_is_shown_as_text(page: Any, server: Server) -> None:
    page.goto(f"/runs/{server.built.alpha}?show=all")
    page.fill("input[name=q]", "add 3 AND 4")  # search, any case
    page.click("form.filters button")
    assert page.locator("#rows tr").count() == 2
    assert XSS in page.inner_text("#rows")
    page.locator("#rows a").first.click()
    for where in ("#messages", "#prompt", "#response"):
        assert XSS in page.inner_text(where), where
    assert page.locator("main script").count() == 0
    assert page.evaluate("document.body.dataset.xss") is None  # never ran


def test_two_generators_side_by_side(page: Any, server: Server) -> None:
    page.goto("/runs")
    page.check(f"input[name=run][value='{server.built.alpha}']")
    page.check(f"input[name=run][value='{server.built.beta}']")
    page.click("text=Compare the ticked runs")
    table = page.locator("#compare")
    heads = table.locator("tr").first.locator("th").all_inner_texts()
    col = {name: next(i for i, h in enumerate(heads) if f"fake:{name}" in h)
           for name in ("alpha", "beta")}
    texts = cells(table.locator("tr", has_text="What is 2 + 2?"))
    assert "alpha works it out." in texts[col["alpha"]]
    assert "beta works it out." in texts[col["beta"]]
    texts = cells(table.locator("tr", has_text="What is 10 - 3?"))
    assert "no final answer" in texts[col["alpha"]]
    assert "beta works it out." in texts[col["beta"]]


def test_a_pair_shows_its_two_sides_and_the_verdicts(page: Any, server: Server) -> None:
    page.goto("/pairs")
    page.click(f"a[href='/pairs/{server.built.pairs}']")
    pair = page.locator("#pair-0")
    assert "When exactly did the clarity problem start for" in pair.locator(
        ".side.chosen").inner_text()
    assert "When did it start for" in pair.locator(".side.rejected").inner_text()
    verdicts = pair.locator("table.verdicts").inner_text()
    assert "ab" in verdicts and "ba" in verdicts and "5.0" in verdicts
    assert "pairs 1–10 of 12" in page.inner_text(".pager")


def test_label_three_pairs_with_the_keyboard(page: Any, server: Server) -> None:
    run = server.built.pairs
    pairs = {p.index: p for p in Store(server.built.root / "datagen.duckdb").read_pairs(run)}
    page.goto(f"/pairs/{run}/label")  # resumes at the first pair not labelled
    for idx, key in ((0, "a"), (1, "b"), (2, "t")):
        page.wait_for_url(re.compile(f"/pairs/{run}/label/{idx}$"))
        shown_a = pairs[idx].chosen[0].content if chosen_first(pairs[idx].pair_id) else \
            pairs[idx].rejected[0].content
        assert shown_a in page.inner_text("#side-a")
        page.keyboard.press(key)
    page.wait_for_url(re.compile(f"/pairs/{run}/label/3$"))

    stored = {x["idx"]: x["label"] for x in api.pair_labels(run, "local",
                                                             workspace=server.built.root)}
    first = {i: "chosen" if chosen_first(pairs[i].pair_id) else "rejected" for i in (0, 1)}
    assert stored[0] == first[0]  # a: the side shown as A
    assert stored[1] == ("rejected" if first[1] == "chosen" else "chosen")  # b: the other
    assert stored[2] == "tie"

    page.goto(f"/pairs/{run}/label")  # a new visit resumes after the last label
    page.wait_for_url(re.compile(f"/pairs/{run}/label/3$"))
    page.goto(f"/pairs/{run}/label/1")
    assert "labelled: b" in page.inner_text("#label-status")


def test_a_new_run_shows_up_on_reload(page: Any, server: Server) -> None:
    page.goto("/runs")
    before = page.locator("#runs tr").count()
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        new = pool.submit(generate, server.built.root, "gamma", pairs_responder, n=1,
                          method="attribute-variants",
                          method_args={"attributes": ["focus"]}).result()
    page.reload()
    assert page.locator("#runs tr").count() == before + 1
    assert page.locator(f"a[href='/runs/{new}']").count() == 1
