"""Built-in launchers: workers on this machine, or Slurm jobs through submitit.

``launchers.local`` is the default everywhere. ``launchers.slurm`` submits each worker as one
Slurm job with submitit (``pip install 'critui[slurm]'``) and follows it the same way, through
the run's ``events.jsonl`` on a shared file system; ``cluster=local`` runs the same submitit
path as local processes, to try a set-up before a cluster sees it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from critui.errors import CritUIError
from critui.hookspecs import hookimpl
from critui.kinds import Launcher
from critui.launching import EXIT_REQUEUE, LOG_FILE, JobHandle, run_worker, start_worker
from critui.params import Param

SUBMITIT_DIR = "submitit"  # under the critui home: submitit's job scripts, pickles and logs


class Local(Launcher):
    name = "local"
    description = "Workers as subprocesses of this machine (the default)."
    local = True

    def start(self, run_dir: Path, env: dict[str, str]):
        return start_worker(run_dir, env)


class Slurm(Launcher):
    name = "slurm"
    description = ("Each worker as a Slurm job, through submitit (pip install 'critui[slurm]'); the "
                   "critui home must be on a file system the nodes share.")
    params = (
        Param("partition", "str", "", "Slurm partition (empty: the cluster's default)"),
        Param("account", "str", "", "Slurm account to charge (empty: your default)"),
        Param("time", "int", 240, "time limit of each job, minutes", min=1),
        Param("gpus", "int", 1, "GPUs per job", min=0, max=64),
        Param("cpus", "int", 8, "CPU cores per job", min=1, max=1024),
        Param("mem", "int", 32, "memory per job, GiB", min=1),
        Param("cluster", "choice", "slurm", "submitit's backend: slurm, or local to try the submitit path "
              "on this machine", choices=("slurm", "local")),
    )

    def check(self) -> None:
        _submitit()
        if self.settings["cluster"] == "slurm" and not _on_path("sbatch"):
            raise CritUIError(
                "--launcher slurm needs Slurm's sbatch, and there is none on this machine's PATH. Run "
                "critui on a Slurm login node, or try the submitit path here with "
                "`--set launcher.cluster=local`, or leave out --launcher to train on this machine."
            )

    def executor(self):
        submitit = _submitit()
        executor = submitit.AutoExecutor(folder=self.folder(self.settings["cluster"]), cluster=self.settings["cluster"])
        options: dict[str, Any] = {"timeout_min": self.settings["time"], "gpus_per_node": self.settings["gpus"],
                                   "cpus_per_task": self.settings["cpus"], "mem_gb": self.settings["mem"],
                                   "tasks_per_node": 1, "nodes": 1, "name": "critui"}
        if self.settings["partition"]:
            options["slurm_partition"] = self.settings["partition"]
        if self.settings["account"]:
            options["slurm_account"] = self.settings["account"]
        if self.settings["cluster"] != "slurm":  # the other backends reject slurm_* options
            options = {k: v for k, v in options.items() if not k.startswith("slurm_")}
        executor.update_parameters(**options)
        return executor

    def folder(self, cluster: str) -> Path:
        """Where submitit keeps a job's files. A local job's are in one folder that exists before
        it starts: submitit's local controller opens its log at once, in ``%j`` put in by its
        parent only after the controller has started, a race it loses on a loaded machine."""
        return self.home / SUBMITIT_DIR / ("local" if cluster == "local" else "%j")

    def start(self, run_dir: Path, env: dict[str, str]):
        job = self.executor().submit(WorkerJob(), str(run_dir), dict(env))
        return SubmititWorker(job, self.settings["cluster"])

    def alive(self, job: str) -> bool | None:
        cluster, job_id = parse_job(job)
        if job_id is None:
            return False  # not an id submitit gives: no job of ours, so none that runs
        if cluster == "local":  # submitit's local job id is its controller's pid
            from critui.processes import pid_alive

            done = (self.folder("local") / f"{job_id}_0_result.pkl").exists()
            return pid_alive(int(job_id), LOCAL_CONTROLLER) and not done
        try:
            submitit = _submitit()
            state = submitit.SlurmJob(self.home / SUBMITIT_DIR / "%j", job_id).state
        except Exception:  # noqa: BLE001 - sacct missing or failing: cannot tell
            return None
        if state.startswith(("PENDING", "RUNNING", "REQUEUE", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING")):
            return True
        return None if state in ("UNKNOWN", "") else False

    def stop_command(self, jobs: list[str]) -> str | None:
        """The shell command that cancels ``jobs`` by hand, for a message (None: none of ours)."""
        ids = [(cluster, job_id) for cluster, job_id in map(parse_job, jobs) if job_id is not None]
        slurm = [job_id for cluster, job_id in ids if cluster == "slurm"]
        local = [job_id for cluster, job_id in ids if cluster == "local"]  # submitit's controllers
        commands = ([f"scancel {' '.join(slurm)}"] if slurm else []) + ([f"kill {' '.join(local)}"] if local else [])
        return "; ".join(commands) or None

    def cancel(self, job: str) -> bool:
        cluster, job_id = parse_job(job)
        if job_id is None:
            return False
        submitted = None if cluster == "local" else _submitit().SlurmJob(self.home / SUBMITIT_DIR / "%j", job_id)
        return cancel_job(job, submitted)


# A local job's pid must belong to a submitit controller: the id comes from the index, which
# anyone may edit, and "local:-1" handed to os.kill would signal every process of the user.
LOCAL_CONTROLLER = "submitit.local._local"
_JOB_ID = {"local": re.compile(r"[0-9]+"), "slurm": re.compile(r"[0-9]+(_[0-9]+)?")}


def parse_job(job: object) -> tuple[str, str | None]:
    """``CLUSTER:ID`` split in two; the id is None unless it has the form that cluster's ids
    take (digits; a Slurm array task's ``123_4``), so that nothing else reaches ``os.kill`` or
    ``scancel`` (where ``--user=me`` would cancel every job of the user)."""
    cluster, _, job_id = str(job).partition(":")
    form = _JOB_ID.get(cluster)
    return cluster, job_id if form is not None and form.fullmatch(job_id) else None


def cancel_job(job: str, submitted) -> bool:
    """Stop a submitit job cleanly: ``job`` is ``CLUSTER:ID``, ``submitted`` its submitit Job
    (not needed for the local backend). False if ``job`` names no job of ours."""
    cluster, job_id = parse_job(job)
    if job_id is None:
        return False
    if cluster == "local":
        # submitit's local job id is its controller's pid, which forwards SIGTERM to the
        # worker. (Its own cancel sends SIGINT, which a shell's background job ignores.)
        from critui.processes import signal_process

        return signal_process(int(job_id), signal.SIGTERM, LOCAL_CONTROLLER)
    submitted.cancel(check=False)  # scancel: SIGTERM to the job's processes, SIGKILL later
    return True


class WorkerJob:
    """What a submitit job runs: the worker's own ``main``, its output in the run's log.

    Its result is the worker's exit code. The worker installs its SIGTERM and SIGINT handlers
    over submitit's, so ``scancel`` stops it cleanly (``cancelled``). Slurm warns a job with
    SIGUSR2 before its time limit or on preemption: the worker stops at a safe point
    (``paused``), then submitit's own handler requeues the job (``checkpoint`` is how submitit
    knows it may), and the requeued job resumes from the run's last checkpoint.
    """

    def __call__(self, run_dir: str, env: dict[str, str]) -> int:
        os.environ.update(env)
        os.environ["PYTHONUNBUFFERED"] = "1"
        with open(Path(run_dir) / LOG_FILE, "ab") as log:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        warning = signal.SIGUSR2
        requeue = signal.getsignal(warning)  # submitit's checkpoint_and_try_requeue
        code = run_worker(run_dir, requeue_signal=warning)
        if code == EXIT_REQUEUE and callable(requeue):
            requeue(warning, None)  # requeues and exits; raises when it will not requeue
        return code

    def checkpoint(self, run_dir: str, env: dict[str, str]):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, run_dir, env)  # the same call again: the run resumes itself


class SubmititWorker(JobHandle):
    """A submitit job behind the ``subprocess.Popen`` methods the manager uses."""

    def __init__(self, job, cluster: str):
        self._job = job
        self.job = f"{cluster}:{job.job_id}"

    def poll(self) -> int | None:
        if self.returncode is None and self._job.done():
            try:
                self.returncode = int(self._job.result())
            except Exception:  # noqa: BLE001 - cancelled, timed out, node failure: no result
                state = str(self._job.state)
                cancelled = state.startswith(("CANCELLED", "INTERRUPTED", "TIMEOUT", "PREEMPTED"))
                self.returncode = -signal.SIGTERM if cancelled else 1
        return self.returncode

    def stop(self) -> None:
        cancel_job(self.job, self._job)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise CritUIError(
            "--launcher slurm needs the submitit package, which is not installed. Install it with "
            "`pip install 'critui[slurm]'` (or `pip install submitit`), or leave out --launcher to "
            "train on this machine."
        ) from None
    return submitit


def _on_path(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


@hookimpl
def critui_register_launchers(register):
    register(Local)
    register(Slurm)
