"""The Ray job entrypoint: train one student in this process.

::

    python -m students.job --recipe tiny-llama --data runs/<id>/data.parquet --workspace WS

``--recipe`` is a preset name, a recipe file, or a recipe as JSON; ``--data`` a file path or a
data reference as JSON (what :mod:`students.ray_jobs` passes, so the job trains exactly the
student the driver asked for). This process trains directly and never calls ``ray.init``: the
job's entrypoint resources are the training's resources. User errors print one line starting
with ``error:`` (the driver reports it) and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from datagen_core.errors import DatagenError
from datagen_core.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m students.job",
                                description="Train one student in this process.")
    p.add_argument("--recipe", required=True, help="preset, recipe file, or recipe JSON")
    p.add_argument("--data", required=True, help="training file, or a data reference as JSON")
    p.add_argument("--workspace", required=True, help="workspace folder (shared with the driver)")
    args = p.parse_args(argv)
    from students.recipes import load_recipe
    from students.records import DataRef
    from students.train import train_student

    try:
        spec = orjson.loads(args.recipe) if args.recipe.lstrip().startswith("{") else args.recipe
        recipe = load_recipe(spec)
        data = (DataRef.model_validate_json(args.data) if args.data.lstrip().startswith("{")
                else args.data)
        rec = train_student(recipe, data, Workspace.resolve(args.workspace))
    except DatagenError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print(f"student {rec.student_id} {rec.status}: {rec.steps} steps in {rec.train_seconds} s, "
          f"final loss {rec.final_loss}; model in {rec.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
