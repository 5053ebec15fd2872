"""The web app over HTTP, as a hostile page or a curious user would talk to it: nothing outside a
run's folder can be read, other hosts and origins are refused, labels take only same-origin
JSON, and only the loopback is served unless exposed on purpose."""

from __future__ import annotations

import http.client
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app as cli
from datagen.serve import is_loopback
from datagen.serve.labelling import chosen_first
from datagen_core.errors import ConfigError, InputError
from tests.serve.conftest import Server, start_server


def request(server: Server, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent exactly as given (no client normalises ``..``)."""
    where = urlsplit(server.url)
    con = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        con.putrequest(method, path, skip_host="Host" in (headers or {}),
                       skip_accept_encoding=True)
        for k, v in {**(headers or {}), **({"Content-Length": str(len(body))} if body else {})
                     }.items():
            con.putheader(k, v)
        con.endheaders(body)
        res = con.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        con.close()


def test_run_files_are_served_and_nothing_outside_a_run_folder(server: Server) -> None:
    run = server.built.alpha
    folder = server.built.root / "runs" / run
    status, headers, body = request(server, f"/runs/{run}/files/run.json")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert orjson.loads(body)["run_id"] == run
    (folder / "outside.txt").symlink_to("/etc/passwd")
    (folder / "db-link").symlink_to(server.built.root / "datagen.duckdb")
    secret = server.built.root / "secret.txt"
    secret.write_text("not for the browser")
    for path in (
        f"/runs/{run}/files/../../secret.txt",
        f"/runs/{run}/files/..%2F..%2Fsecret.txt",
        f"/runs/{run}/files/%2e%2e%2f%2e%2e%2fsecret.txt",
        f"/runs/{run}/files/..%5c..%5csecret.txt",
        f"/runs/{run}/files/%2Fetc%2Fpasswd",
        f"/runs/{run}/files/outside.txt",
        f"/runs/{run}/files/db-link",
        f"/runs/{run}/files/.run.lock",
        f"/runs/..%2F..%2F{run}/files/run.json",
        "/runs/../secret.txt",
        "/static/../../../../secret.txt",
        "/static/..%2F..%2F..%2F..%2Fsecret.txt",
        "/static/%2e%2e/app.py",
        "/assets/..%2F..%2Fsecret.txt",
    ):
        status, _, body = request(server, path)
        assert status in (400, 404), (path, status)
        assert b"not for the browser" not in body and b"root:" not in body, path


def test_another_host_name_is_refused(server: Server) -> None:
    """A page on another site whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing."""
    status, _, _ = request(server, "/runs", headers={"Host": "evil.example:80"})
    assert status == 400
    status, headers, _ = request(server, "/runs")
    assert status == 200
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_labels_take_same_origin_json_only(server: Server) -> None:
    from metrics.store import Store

    run = server.built.pairs
    last = Store(server.built.root / "datagen.duckdb").read_pairs(run)[-1]
    path = f"/pairs/{run}/label/{last.index}"
    body = orjson.dumps({"pair_id": last.pair_id, "choice": "a"})
    json = {"Content-Type": "application/json"}
    assert request(server, path, "POST", body, {**json, "Origin": "http://evil.example"}
                   )[0] == 403
    assert request(server, path, "POST", body, {**json, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert request(server, path, "POST", body, {"Content-Type": "text/plain"})[0] == 415
    assert request(server, path, "POST", b"{", json)[0] == 400
    assert request(server, path, "POST", orjson.dumps({"pair_id": last.pair_id,
                                                       "choice": "maybe"}), json)[0] == 400
    stale = orjson.dumps({"pair_id": "not-this-pair", "choice": "a"})
    assert request(server, path, "POST", stale, json)[0] == 409
    def labels_of_last() -> list[tuple[str, str]]:
        return [(x["label"], x["annotator"]) for x in api.pair_labels(
            run, workspace=server.built.root) if x["pair_id"] == last.pair_id]

    assert labels_of_last() == []  # none of the refused requests stored anything

    status, _, answer = request(server, path, "POST", body, {**json, "Origin": server.url})
    assert status == 200, answer
    got = orjson.loads(answer)
    assert got["label"] == ("chosen" if chosen_first(last.pair_id) else "rejected")
    assert labels_of_last() == [(got["label"], "local")]


def test_only_the_loopback_unless_exposed(monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "example.org"))
    with pytest.raises(ConfigError, match="not a loopback address"):
        api.serve(host="192.168.1.20")
    res = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert isinstance(res.exception, ConfigError) and "--expose" in str(res.exception)
    with pytest.raises(ConfigError, match="port"):
        api.serve(port=70000)

    class Stop(Exception):
        pass

    def stop(*args: object, **kwargs: object) -> None:
        raise Stop  # before anything binds: the warning is what this test is after

    monkeypatch.setattr("datagen.serve.app.create_app", stop)
    with caplog.at_level(logging.WARNING, logger="datagen.serve"), pytest.raises(Stop):
        api.serve(host="0.0.0.0", expose=True)
    assert "anyone who can reach this address" in caplog.text


def test_serve_needs_a_workspace(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no datagen workspace"):
        api.serve(tmp_path / "none", port=0)


def test_ctrl_c_stops_the_server_quietly(server: Server) -> None:
    proc, url = start_server(server.built.root)
    try:
        assert request(Server(proc, url, server.built), "/runs")[0] == 200
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None and "interrupted" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
