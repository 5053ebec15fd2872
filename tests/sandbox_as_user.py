"""Run code through datagen's sandbox as whatever user runs this script; print a JSON report.

The tests run it as an unprivileged user with the bare system Python (``/usr/bin/python3 -I``),
which cannot reach the project's virtual environment, so the sandbox module is loaded by file
path and needs only the standard library. Input (argv[1], JSON): ``code``, and ``mechanisms``
(true: report :func:`sandbox_mechanisms` instead of running the code).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "datagen_core",
                     "sandbox.py")


def main() -> None:
    request = json.loads(sys.argv[1])
    spec = importlib.util.spec_from_file_location("datagen_sandbox", os.path.realpath(_PATH))
    assert spec is not None and spec.loader is not None
    sandbox = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sandbox  # dataclasses look their module up
    spec.loader.exec_module(sandbox)
    try:
        if request.get("mechanisms"):
            report = {"mechanisms": sorted(sandbox.sandbox_mechanisms())}
        else:
            r = sandbox.run_python(request["code"], timeout_s=request.get("timeout_s", 20))
            report = {"status": r.status, "stdout": r.stdout, "stderr": r.stderr}
    except Exception as e:
        report = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
