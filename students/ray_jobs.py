"""Run student trainings on Ray: tasks on a local Ray, or jobs on a cluster via the Jobs API.

- No address: a private local Ray is started for the call (``address="local"``, so a cluster
  someone else started on this machine is never joined by accident), with no dashboard and a
  temp folder of its own. Each student is one task reserving the recipe's ``num_cpus`` /
  ``num_gpus``; all are submitted at once and Ray runs side by side what fits.
- An address (``ray_address`` or ``$RAY_ADDRESS``: the dashboard's ``http://HEAD:8265``): each
  student is a job, ``python -m students.job ...``, with the recipe's resources as entrypoint
  resources. The entrypoint uses this interpreter (``sys.executable``; override with
  ``$DATAGEN_RAY_PYTHON`` when the cluster's Python lives elsewhere) and puts this checkout on
  ``PYTHONPATH``; the workspace must be on a filesystem the cluster shares (the job writes the
  student there and this process reads the manifest back).

Ray 2.60 enables token authentication by default, but a Jobs API client only sends the token when
``RAY_AUTH_MODE=token``; :func:`enable_token_auth` sets it when a token is available
(``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).

Every wait is bounded by ``timeout_s``; a task or job still running then is cancelled or stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen_core.errors import ConfigError, DatagenError, MissingDependencyError
from datagen_core.workspace import Workspace
from students.recipes import Recipe
from students.records import DataRef, StudentRecord
from students.train import read_manifest, student_id

log = logging.getLogger("datagen.students")

Job = tuple[Recipe, DataRef]
Outcome = StudentRecord | DatagenError

_POLL_S = 1.0
_PASS_ENV = ("DATAGEN_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def train_students(jobs: list[Job], workspace: Workspace, *, ray_address: str | None = None,
                   timeout_s: float | None = None) -> list[Outcome]:
    """Train every job on Ray, all submitted before any is waited for; one outcome per job, in
    order: the finished record, or the error that ended it."""
    if not jobs:
        return []
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        return _run_jobs(jobs, workspace, address, timeout_s)
    return _run_local(jobs, workspace, timeout_s)


# -- local Ray tasks -----------------------------------------------------------------------------
def _train_task(recipe: dict[str, Any], data: dict[str, Any], root: str) -> dict[str, Any]:
    """The Ray task: train in this worker process. User errors come back as data (their
    exception classes need not pickle); anything else propagates with its traceback."""
    from students.train import train_student

    try:
        rec = train_student(Recipe.model_validate(recipe), DataRef.model_validate(data),
                            Workspace(Path(root)))
    except DatagenError as e:
        return {"datagen_error": str(e)}
    return rec.model_dump(mode="json")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("training students on Ray", "ray", extra="train") from None
    return ray


@contextlib.contextmanager
def local_ray() -> Iterator[None]:
    """A private local Ray for the duration of the block, or the one already running (then it
    is left running). A bench enters it once, so its students share one Ray and its workers."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    temp_dir = tempfile.mkdtemp(prefix="dg-ray-")  # short: Ray's socket paths have a limit
    # Ray announces that it turned token authentication on for this private cluster; it stays on,
    # the notice is noise in every bench's output.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR)
    _refresh_ray_auth()
    ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count() or 1,
             _temp_dir=temp_dir, object_store_memory=256 * 1024 * 1024,
             log_to_driver=sys.stderr.isatty(), logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _refresh_ray_auth() -> None:
    """Forget the token and auth mode Ray cached earlier in this process. A Jobs API client
    used before (another cluster's token) would otherwise make the new private cluster's GCS
    refuse its own driver ("InvalidAuthToken")."""
    try:
        import ray._raylet as raylet
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

        AuthenticationTokenLoader.instance().reset_cache()
        raylet.Config.initialize("")  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # another Ray version: nothing cached to forget
        pass


def _run_local(jobs: list[Job], ws: Workspace, timeout_s: float | None) -> list[Outcome]:
    ray = _import_ray()
    with local_ray():
        _check_fits(jobs, ray.cluster_resources())
        task = ray.remote(_train_task)
        refs = [
            task.options(num_cpus=r.resources.num_cpus, num_gpus=r.resources.num_gpus,
                         max_retries=0, name=f"student-{student_id(r, d)}").remote(
                r.model_dump(mode="json"), d.model_dump(mode="json"), str(ws.root))
            for r, d in jobs
        ]
        return _wait_tasks(ray, refs, jobs, timeout_s)


def _check_fits(jobs: list[Job], have: dict[str, float]) -> None:
    """Fail at once, not hang forever, when a recipe asks for more than the local Ray has."""
    for recipe, _ in jobs:
        res = recipe.resources
        for name, want, key in (("CPUs", res.num_cpus, "CPU"), ("GPUs", res.num_gpus, "GPU")):
            if want > have.get(key, 0.0):
                raise ConfigError(
                    f"recipe {recipe.label} asks for {want:g} {name}; this machine's Ray has "
                    f"{have.get(key, 0.0):g}: lower resources.num_{name[:3].lower()}, use a CPU "
                    "preset (tiny-llama, smollm2-lora), or pass --ray-address of a cluster")


def _wait_tasks(ray: Any, refs: list[Any], jobs: list[Job],
                timeout_s: float | None) -> list[Outcome]:
    out: list[Outcome | None] = [None] * len(refs)
    pending = {ref: i for i, ref in enumerate(refs)}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        wait_s = 5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic()))
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
        for ref in ready:
            i = pending.pop(ref)
            sid = student_id(*jobs[i])
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as e:
                out[i] = DatagenError(f"student {sid} failed: {_last_line(str(e))}")
                continue
            failed = value.get("datagen_error")
            out[i] = (DatagenError(f"student {sid}: {failed}") if failed is not None
                      else StudentRecord.model_validate(value))
        if pending and deadline is not None and time.monotonic() >= deadline:
            for ref, i in pending.items():
                ray.cancel(ref, force=True)
                out[i] = DatagenError(f"student {student_id(*jobs[i])}: not finished after "
                                      f"{timeout_s:g} s; cancelled")
            break
    return [o for o in out if o is not None]


# -- Ray Jobs API --------------------------------------------------------------------------------
def enable_token_auth() -> None:
    """Send the cluster token with Jobs API requests when one is available (Ray 2.60 only sends
    it when ``RAY_AUTH_MODE=token``; an explicit ``RAY_AUTH_MODE`` is left alone)."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    have = (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file())
    if not have:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config per process; refresh it as `ray start` itself does
        import ray._raylet as raylet

        raylet.Config.initialize("")  # type: ignore[attr-defined]
    except Exception:  # an older or minimal Ray: the environment variable is enough
        pass


def job_client(address: str) -> Any:
    """A JobSubmissionClient for ``address`` (``http://`` added when no scheme is given)."""
    enable_token_auth()
    _import_ray()
    from ray.job_submission import JobSubmissionClient

    if address == "auto":  # this machine's head, at the dashboard's default port
        address = "127.0.0.1:8265"
    url = address if "://" in address else f"http://{address}"
    try:
        return JobSubmissionClient(url)
    except Exception as e:
        raise DatagenError(
            f"cannot reach the Ray Jobs API at {url}: {_last_line(str(e))} (give the "
            "dashboard address, e.g. http://HEAD:8265; a token-protected cluster needs "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None


def entrypoint(recipe: Recipe, data: DataRef, ws: Workspace) -> str:
    python = os.environ.get("DATAGEN_RAY_PYTHON") or sys.executable
    return shlex.join([python, "-m", "students.job", "--recipe", recipe.model_dump_json(),
                       "--data", data.model_dump_json(), "--workspace", str(ws.root)])


def runtime_env(recipe: Recipe) -> dict[str, Any]:
    root = str(Path(__file__).resolve().parents[1])  # this checkout, for `-m students.job`
    env = {"PYTHONPATH": root, "OMP_NUM_THREADS": str(recipe.resources.threads)}
    env.update({k: os.environ[k] for k in _PASS_ENV if os.environ.get(k)})
    return {"env_vars": env}


def _run_jobs(jobs: list[Job], ws: Workspace, address: str,
              timeout_s: float | None) -> list[Outcome]:
    from ray.job_submission import JobStatus

    client = job_client(address)
    submitted: list[tuple[str, str]] = []
    for recipe, data in jobs:
        sid = student_id(recipe, data)
        job_id = client.submit_job(
            entrypoint=entrypoint(recipe, data, ws),
            submission_id=f"datagen-student-{sid}-{uuid.uuid4().hex[:6]}",
            entrypoint_num_cpus=recipe.resources.num_cpus,
            entrypoint_num_gpus=recipe.resources.num_gpus,
            runtime_env=runtime_env(recipe),
            metadata={"datagen_student_id": sid},
        )
        log.info("student %s: submitted as Ray job %s", sid, job_id)
        submitted.append((sid, job_id))
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status: dict[str, Any] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for _, job_id in submitted:
            if status.get(job_id) not in terminal:
                status[job_id] = client.get_job_status(job_id)
        if all(s in terminal for s in status.values()):
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    out: list[Outcome] = []
    for sid, job_id in submitted:
        st = status[job_id]
        if st not in terminal:
            client.stop_job(job_id)
            out.append(DatagenError(f"student {sid}: Ray job {job_id} not finished after "
                                    f"{timeout_s:g} s; stopped"))
        elif st == JobStatus.SUCCEEDED:
            rec = read_manifest(ws, sid)
            out.append(rec if rec is not None and rec.status == "finished" else DatagenError(
                f"student {sid}: Ray job {job_id} succeeded but {ws.students_dir / sid} has no "
                "finished student: is the workspace on a filesystem the cluster shares?"))
        else:
            logs = client.get_job_logs(job_id)
            out.append(DatagenError(f"student {sid}: Ray job {job_id} {st.value.lower()}: "
                                    f"{_error_line(logs)}"))
    return out


def _error_line(logs: str) -> str:
    """The job's own one-line error (``error: ...`` from students.job), else its last line."""
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln.removeprefix("error:").strip()
    return lines[-1] if lines else "no output"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text
