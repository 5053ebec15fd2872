"""User text (paths, names, columns, error messages) is printed as data, never as rich markup.

Each case once crashed the CLI or silently changed what it printed: ``[/config]`` in a help
string, ``[/q]`` as a column name, ``data[red].jsonl`` as a path, ``[/x]`` as a generator name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson


def datagen(*args: str, env: dict[str, str], cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "datagen.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _one_clean_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_generate_help_shows_the_uri_syntax_verbatim(cli_env: dict[str, str]) -> None:
    r = datagen("generate", "--help", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "hf://org/name[/config]:split" in " ".join(r.stdout.split())


def test_an_error_message_with_brackets_is_one_line(cli_env: dict[str, str]) -> None:
    r = datagen("generate", "-g", "fake", "-i", "hf://bad", env=cli_env)
    assert r.returncode == 2
    assert "hf://org/name[/config]:split" in _one_clean_line(r)


def test_a_path_with_brackets_is_printed_as_given(cli_env: dict[str, str], tmp_path: Path
                                                  ) -> None:
    r = datagen("generate", "-g", "fake", "-i", "data[red].jsonl", env=cli_env, cwd=tmp_path)
    assert r.returncode != 0
    assert "data[red].jsonl" in _one_clean_line(r)


def test_a_column_named_like_a_closing_tag(cli_env: dict[str, str], tmp_path: Path) -> None:
    seeds = tmp_path / "s.jsonl"
    seeds.write_bytes(b"".join(orjson.dumps({"[/q]": f"question [b]{i}[/b]"}) + b"\n"
                               for i in range(3)))
    r = datagen("generate", "-g", "fake", "-i", str(seeds), "-c", "[/q]", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "question [b]0[/b]" in r.stderr  # the sample rows, as written
    shown = datagen("runs", "show", r.stderr.split()[1].rstrip(":"), env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert "[/q]" in shown.stdout
    listed = datagen("runs", env=cli_env)
    assert listed.returncode == 0, listed.stderr


def test_a_generator_named_like_markup_in_a_bench_plan(cli_env: dict[str, str], tmp_path: Path
                                                       ) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\nn: 4\n"
        "generators:\n  - {name: '[/x]', spec: fake}\n  - {name: '[bold]y', spec: fake}\n"
        "methods: [response-generation]\n"
        "domains:\n  arithmetic: {seeds: 'builtin:arithmetic', tasks: [arithmetic]}\n"
        "curation: {decontaminate: false}\n"
    )
    r = datagen("bench", str(suite), "--dry-run", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "[/x]" in r.stdout and "[bold]y" in r.stdout
