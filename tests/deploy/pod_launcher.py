"""A run launcher that starts each run the way Dagster's K8s and ECS launchers do, as a process of its own on
this machine: `python -m dagster api execute_run <args>` (dagster's ExecuteRunArgs, no instance reference: the
run loads the instance from DAGSTER_HOME, as a pod does from the mounted ConfigMap), in a fresh working
directory with a fresh HOME, unlike the code server's and the daemon's. A test stand-in for a pod, since no
cluster runs here; run monitoring asks it whether the run's process is alive."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from dagster import _check as check
from dagster._config import Field, StringSource
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

PID_TAG = "viscon-test/pod-pid"


class PodLikeRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, pods_dir: str, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self.pods_dir = Path(pods_dir)
        super().__init__()

    @property
    def inst_data(self):
        return self._inst_data

    @classmethod
    def config_type(cls):
        return {"pods_dir": Field(StringSource)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = check.not_none(context.job_code_origin)
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=None,
                              set_exit_code_on_failure=True).get_command_args()
        pod = self.pods_dir / run.run_id
        (pod / "home").mkdir(parents=True, exist_ok=True)
        (pod / "work").mkdir(exist_ok=True)
        with open(pod / "run.log", "w") as log:
            proc = subprocess.Popen(args, cwd=pod / "work", env={**os.environ, "HOME": str(pod / "home")},
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(proc.pid)})
        self._instance.report_engine_event(f"started the run's process {proc.pid} in its own folder", run,
                                           cls=self.__class__)

    def _pid(self, run_id: str) -> int | None:
        run = self._instance.get_run_by_id(run_id)
        value = run.tags.get(PID_TAG) if run else None
        return int(value) if value else None

    def terminate(self, run_id: str) -> bool:
        pid = self._pid(run_id)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid = self._pid(run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "no process recorded")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"process {pid} is gone")
        try:  # an exited child the daemon has not reaped is a zombie: dead all the same (only STARTED runs are asked)
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            state = "?"
        if state == "Z":
            return CheckRunHealthResult(WorkerStatus.FAILED, f"process {pid} exited")
        return CheckRunHealthResult(WorkerStatus.RUNNING)
