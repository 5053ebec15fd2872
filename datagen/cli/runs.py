"""``datagen generate``, ``datagen runs`` and ``datagen export``: make a dataset, look at runs,
write one out. Thin functions over :mod:`datagen.api`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from datagen.cli.console import err, out, parse_key_values, state, styled

runs_app = typer.Typer(help="List runs, or show one with counts, tokens, cost and failures.",
                       rich_markup_mode=None)


def generate(
    generator: Annotated[str, typer.Option(
        "--generator", "-g", help="provider:model[@base_url] (e.g. hf:smollm2, openai:gpt-4o-mini,"
        " openai:MODEL@http://127.0.0.1:8000/v1) or a generator YAML file.")] = "hf:smollm2",
    input: Annotated[str | None, typer.Option(
        "--input", "--seeds", "-i", help="Prompts or seeds: .jsonl/.json/.csv/.parquet, a saved HF"
        " dataset folder, hf://org/name[/config]:split, or builtin:NAME (default: the built-in "
        "seed set of the domain).")] = None,
    column: Annotated[str | None, typer.Option(
        "--column", "-c", help="Prompt column (default: prompt/instruction/question/...).")] = None,
    n: Annotated[int | None, typer.Option("-n", help="Use the first N rows.")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="prompt, instance-generation, "
        "response-generation, quality-enhancement, attribute-variants, multi-attribute-edit")
    ] = "prompt",
    domain: Annotated[str | None, typer.Option(
        "--domain", "-d", help="math, code or general (AgoraBench methods).")] = None,
    columns: Annotated[str | None, typer.Option(
        help="Column map for seeds, e.g. instruction=question,response=answer.")] = None,
    arg: Annotated[list[str] | None, typer.Option(
        "--arg", "-a", help="Method argument KEY=VALUE (YAML value), repeatable: -a k=5")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    samples: Annotated[int, typer.Option(help="Responses per prompt.")] = 1,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t")] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    rpm: Annotated[float | None, typer.Option(help="Requests per minute limit.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens per minute limit.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per attempt.")] = None,
    max_retries: Annotated[int | None, typer.Option()] = None,
    api_key_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the API key.")] = None,
    dedup: Annotated[bool, typer.Option(
        help="Drop exact and near duplicates (new instructions only).")] = True,
    decontaminate: Annotated[bool, typer.Option(
        help="Drop rows that contain evaluation items (8-gram coverage).")] = True,
    eval_set: Annotated[list[str] | None, typer.Option(
        help="Eval sets to decontaminate against (default: gsm8k, math500, mbpp, humaneval, "
        "ifeval); $DATAGEN_EVAL_DIR holds local copies.")] = None,
    max_failure_rate: Annotated[float | None, typer.Option(
        help="Fail the run (exit 1, status failed) when more than this share of requests "
        "failed, e.g. 0.05. A run that keeps no row always fails.")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Answer the requests through a Ray Data pipeline of backend "
        "replicas: local (a private Ray here), auto (the cluster this machine is part of) or "
        "ray://HEAD:10001. Same run id and files as without it.")] = None,
    ray_replicas: Annotated[int | None, typer.Option(
        "--ray-replicas", help="Backend (or vLLM engine) replicas with --ray-address (default 1;"
        " vLLM's tensor_parallel_size is a generator option).")] = None,
) -> None:
    """Generate a dataset: send prompts to a generator LM, keep the answers as SFT rows."""
    from datagen import api
    from datagen_core.errors import ConfigError, RunFailedError

    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")

    spec = api.load_spec(
        generator,
        sampling={"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                  "seed": seed},
        limits={"concurrency": concurrency, "rpm": rpm, "tpm": tpm, "timeout_s": timeout,
                "max_retries": max_retries},
        api_key_env=api_key_env,
    )
    margs: dict[str, Any] = parse_key_values(arg or [])
    if columns:
        margs["columns"] = _parse_columns(columns)
    if method == "prompt":
        extra = {"column": column, "system": system, "samples": samples if samples != 1 else None}
        margs.update({k: v for k, v in extra.items() if v is not None})
    curation: dict[str, Any] = {}
    if not dedup:
        curation["dedup"] = False
    if not decontaminate:
        curation["decontaminate"] = False
    if eval_set:
        curation["eval_sets"] = eval_set
    if ray_replicas is not None and ray_address is None:
        raise ConfigError("--ray-replicas needs --ray-address (local, auto or ray://HEAD:10001)")
    ray = None if ray_address is None else {"address": ray_address, "replicas": ray_replicas or 1}
    try:
        result = api.generate(spec, input, n=n, method=method, method_args=margs, domain=domain,
                              workspace=state.workspace, progress=False if state.quiet else None,
                              curation=curation, max_failure_rate=max_failure_rate, ray=ray)
    except RunFailedError as e:
        if isinstance(e.result, api.RunResult):
            _summary(e.result)
        raise
    _summary(result)


def _summary(result: Any) -> None:
    """What a run did, on stderr: counts, where the data is, two sample rows, rejections."""
    s = result.stats
    err.print(styled(
        "run ", (result.run_id, "bold"), f": {s.total} requests ({s.reused} reused, {s.sent} sent, "
        f"{s.failed} failed), {result.n_valid}/{len(result.instances)} rows kept, "
        f"{s.prompt_tokens + s.completion_tokens} new tokens, ${s.cost_usd:.4f}"
    ))
    err.print(f"data: {result.data_path}")
    if result.pairs:
        err.print(f"pairs: {len(result.pairs)} preference pairs in {result.run_dir / 'pairs.jsonl'}"
                  f" (export with `datagen pairs export {result.run_id[:8]} -o pairs.jsonl`)")
    for x in result.head(2):
        answer = x.messages[-1].content.replace("\n", " ")
        err.print(styled("  ", (x.messages[0].content[:60], "dim"), f" -> {answer[:100]}"))
    for reason, count in sorted(result.rejections().items(), key=lambda kv: -kv[1])[:5]:
        err.print(f"  rejected {count} x {reason}")
    cur = getattr(result, "curation", None) or {}
    if cur and not cur.get("decontaminated"):
        err.print(styled(("not decontaminated", "yellow"), f": {cur.get('skipped', '')}"))


def _parse_columns(text: str) -> dict[str, str]:
    from datagen_core.errors import ConfigError

    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"bad --columns {text!r}: use instruction=NAME,response=NAME")
        out[key.strip()] = value.strip()
    return out


@runs_app.callback(invoke_without_command=True)
def runs_default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        runs_list()


@runs_app.command("list")
def runs_list() -> None:
    """Runs in the workspace, newest first."""
    from datagen import api

    rows = api.list_runs(state.workspace)
    if not rows:
        err.print("no runs yet: try `datagen generate`")
        return
    from rich import box

    t = Table(box=box.SIMPLE_HEAD)
    t.add_column("run", no_wrap=True, min_width=16)
    t.add_column("status", no_wrap=True)
    t.add_column("generator", overflow="ellipsis", no_wrap=True)
    t.add_column("method", no_wrap=True)
    for name in ("requests", "failed", "kept", "cost $"):
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("notes", no_wrap=True)
    for r in rows:
        t.add_row(r["run_id"], r["status"], r["generator"], r["method"], _s(r["n_requests"]),
                  _s(r["n_failed"]), _s(r["n_valid"]), f"{r['cost_usd'] or 0:.4f}",
                  "" if r["decontaminated"] else "not decontaminated")
    out.print(t)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")]) -> None:
    """One run: counts, tokens, cost, latency, failures and rejections."""
    from datagen import api

    r = api.show_run(run_id, state.workspace)
    m = r["manifest"]
    t = Table(show_header=False, box=None)
    for k, v in [
        ("run", r["run_id"]), ("status", r["status"]), ("generator", r["generator"]),
        ("method", f"{r['method']}@{r['method_version']}"), ("source", r["source"]),
        ("arguments", ", ".join(f"{k}={v}" for k, v in (m.get("method_args") or {}).items()
                                if v is not None) or "-"),
        ("sampling", str(m.get("generator", {}).get("sampling", {}))),
        ("requests", f"{_s(r['n_requests'])} ({_s(r['n_ok'])} ok, {_s(r['n_failed'])} failed, "
                     f"{_s(r['n_reused'])} reused)"),
        ("rows kept", f"{_s(r['n_valid'])} of {_s(r['n_instances'])}"),
        ("tokens", f"{_s(r['prompt_tokens'])} prompt + {_s(r['completion_tokens'])} completion"),
        ("cost", f"${r['cost_usd'] or 0:.4f}"),
        *([("compute", f"{r['compute_s']:.1f} s of the machine"
            + (f", {r['tokens_per_s']:.1f} output tokens/s" if r.get("tokens_per_s") else ""))]
          if r.get("compute_s") else []),
        ("latency", f"p50 {_f(r['latency_p50_s'])} s, p95 {_f(r['latency_p95_s'])} s"),
    ]:
        t.add_row(styled((k, "bold")), str(v))
    if r.get("error"):
        t.add_row(styled(("error", "bold")), r["error"])
    cur = orjson.loads(r["curation"]) if r.get("curation") else None
    if cur:
        counts = cur.get("counts", {})
        parts = [f"{counts.get(k, 0)} {k}" for k in ("exact", "near", "seed", "contaminated")]
        by = ", ".join(f"{k}: {v}" for k, v in cur.get("contaminated_by", {}).items() if v)
        t.add_row(styled(("curation", "bold")), ", ".join(parts) + (f" ({by})" if by else ""))
        if pairs := cur.get("pairs"):
            t.add_row(styled(("pairs curated", "bold")), ", ".join(
                f"{pairs.get(k, 0)} {k}" for k in ("input", "kept", "exact", "near",
                                                    "contaminated")))
        if seeds := cur.get("seeds"):
            t.add_row(styled(("seeds dropped", "bold")),
                      f"{seeds['dropped']} of {seeds['input']} are evaluation items")
    t.add_row(styled(("decontaminated", "bold")), "yes" if r["decontaminated"] else
              f"no: {cur.get('skipped') if cur else 'no curation record'}")
    out.print(t)
    for e in r["errors"]:
        out.print(f"  failed: {e['n']} x {e['error_type']} (e.g. {e['example']})")
    for x in r["rejections"]:
        out.print(f"  rejected: {x['n']} x {x['reject_reason']}")


def export(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Output file.")] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="jsonl or parquet (default: from the file name).")] = None,
    include_rejected: Annotated[bool, typer.Option(help="Also export rejected rows.")] = False,
    push_to_hub: Annotated[str | None, typer.Option(
        "--push-to-hub", help="Push the rows to this Hub dataset repo (ORG/NAME) with a dataset "
        "card: generator, method, run, curation, decontamination, PGR. The token comes from "
        "HF_TOKEN or `hf auth login`.")] = None,
    card_only: Annotated[bool, typer.Option(
        "--card-only", help="With --push-to-hub: update only the dataset card.")] = False,
) -> None:
    """Export a run's rows (chat `messages`) as JSONL or Parquet, and/or push them to the Hub."""
    from datagen import api
    from datagen_core.errors import ConfigError

    if output is None and push_to_hub is None:
        raise ConfigError("give --out PATH, --push-to-hub ORG/NAME, or both")
    if card_only and push_to_hub is None:
        raise ConfigError("--card-only updates the card of a pushed dataset: give "
                          "--push-to-hub ORG/NAME")
    if output is not None:
        path = api.export_run(run_id, output, fmt, include_rejected=include_rejected,
                              workspace=state.workspace)
        err.print(f"wrote {path}")
    if push_to_hub is not None:
        api.push_run(run_id, push_to_hub, include_rejected=include_rejected,
                     card_only=card_only, workspace=state.workspace)
        err.print(f"pushed {'the dataset card' if card_only else 'the rows and a dataset card'} "
                  f"to https://huggingface.co/datasets/{push_to_hub}")


def _s(v: Any) -> str:
    return "-" if v is None else str(v)


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


