"""Steps under torchrun: ``robustlab reproduce --nproc-per-node N`` (and ``--nnodes``).

PyTorch's launcher is the distributed engine; this module only decides how each step is started:

* a training or evaluation step (:data:`DISTRIBUTED_KINDS`) runs as
  ``python -m torch.distributed.run --nproc_per_node N ... -m robustlab.experiments.launch STEP``;
  every process runs the step (the trainers and the evaluation harness shard the work and let
  rank 0 write), and rank 0 leaves the step's result in ``result.json`` for the parent;
* any other step (tables' sweeps, scoring saved examples, grids) runs in one process;
* with ``--jobs J`` side by side on a GPU machine, each job slot owns its own GPUs
  (``CUDA_VISIBLE_DEVICES``): J x N GPUs in all, checked before anything runs.

Several machines (``--nnodes M``): the same ``reproduce`` command on every machine, with
``--node-rank`` 0..M-1 and ``--master-addr``/``--master-port`` of machine 0, and ``--out`` on a
file system they share. Each machine walks the same plan; every distributed step meets on the
rendezvous, rank 0 (on machine 0) writes, and only machine 0 runs the one-process steps and
writes the tables.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import write_json
from ..errors import ConfigError

# step kinds whose entry points shard their work under torchrun and write on rank 0 only
DISTRIBUTED_KINDS = frozenset({"train", "pretrain", "train-purifier", "evaluate"})
RESULT = "result.json"  # rank 0 leaves the result here; a failing rank its error in error-RANK.json


class LaunchFailed(RuntimeError):
    """A launched step failed; the message says why in one line."""


@dataclass(frozen=True)
class Launch:
    """How distributed steps start: processes per machine, machines, this machine's rank, and
    where machine 0 listens (several machines only)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    def __post_init__(self) -> None:
        for name in ("nproc_per_node", "nnodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= 1, got "
                                  f"{value!r}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank must be in 0..{self.nnodes - 1} (--nnodes "
                              f"{self.nnodes}), got {self.node_rank}")
        if self.nnodes > 1 and not self.master_addr:
            raise ConfigError("--nnodes > 1 needs --master-addr: the address of machine 0, "
                              "where every machine meets for each step")

    @property
    def distributed(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1

    @property
    def main(self) -> bool:
        """This machine writes step records and tables (machine 0)."""
        return self.node_rank == 0


def uses_launcher(launch: Launch, slots: list[str | None]) -> bool:
    """Whether steps start in their own launcher process: several processes, or a GPU slot."""
    return launch.distributed or any(s is not None for s in slots)


def gpu_slots(launch: Launch, jobs: int, device: str, gpus: int | None = None) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each of the ``jobs`` slots (None: the CPU, or every GPU
    for a single job); ``gpus`` is the number of GPUs here (asked when None).

    Raises ConfigError when the processes asked for need more GPUs than the machine has."""
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    wants_gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    if not wants_gpu:
        return [None] * jobs
    need = jobs * launch.nproc_per_node
    if need > gpus:
        asked = (f"--jobs {jobs} x --nproc-per-node {launch.nproc_per_node}" if jobs > 1 else
                 f"--nproc-per-node {launch.nproc_per_node}")
        raise ConfigError(f"{asked} needs {need} GPUs, and this machine has {gpus}; ask for at "
                          f"most {gpus} processes in all, or run on the CPU with --device cpu "
                          "(gloo processes)")
    if jobs == 1 and gpus == launch.nproc_per_node:
        return [None]  # one job on every GPU: nothing to hide
    n = launch.nproc_per_node
    return [",".join(str(g) for g in range(j * n, (j + 1) * n)) for j in range(jobs)]


def command(launch: Launch, step_file: Path) -> list[str]:
    """The torchrun command line that runs the step described in ``step_file``."""
    cmd = [sys.executable, "-m", "torch.distributed.run",
           "--nproc_per_node", str(launch.nproc_per_node)]
    if launch.nnodes > 1:
        cmd += ["--nnodes", str(launch.nnodes), "--node_rank", str(launch.node_rank),
                "--master_addr", str(launch.master_addr), "--master_port",
                str(launch.master_port)]
    else:
        cmd += ["--standalone"]  # a free port of its own: side-by-side jobs never clash
    return cmd + ["-m", "robustlab.experiments.launch", str(step_file)]


def launch_step(launch: Launch, gpus: str | None, kind: str, settings: dict[str, Any],
                folder: Path, data_root: str | None, device: str, show: bool) -> Any:
    """Run one step under torchrun (``launch.nproc_per_node`` processes here) and return its
    result; raises LaunchFailed, saying why in one line, when the launch fails.

    ``show``: the processes print to this terminal (progress bars of rank 0); otherwise their
    output is appended to the step's ``log.txt``."""
    how = launch if kind in DISTRIBUTED_KINDS else Launch()
    step_file = folder / "launch.json"
    for stale in [folder / RESULT, *folder.glob("error-*.json")]:
        stale.unlink(missing_ok=True)
    write_json(step_file, {"kind": kind, "settings": settings, "folder": str(folder),
                           "data_root": data_root, "device": device, "progress": show})
    env = dict(os.environ)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // how.nproc_per_node)))
    with open(folder / "log.txt", "a") as log_file:
        out = None if show else log_file
        rc = subprocess.run(command(how, step_file), env=env, stdout=out, stderr=out).returncode
    if rc != 0:
        raise LaunchFailed(_failure(folder, rc, how))
    result = folder / RESULT
    return json.loads(result.read_text())["result"] if result.exists() else None


def _failure(folder: Path, rc: int, launch: Launch) -> str:
    """A process's own robustlab error (bad settings, a missing file) when one wrote it; else
    what torchrun saw, with the first error any process wrote (often a peer's lost connection)."""
    errors = [json.loads(p.read_text()) for p in sorted(folder.glob("error-*.json"))]
    own = [e for e in errors if e.get("robustlab")]
    if own:
        return own[0]["error"]
    who = (f"{launch.nproc_per_node * launch.nnodes} processes" if launch.distributed else
           "the step's process")
    first = f" (first error: {errors[0]['error'][:300]})" if errors else ""
    return (f"torchrun exited with code {rc}: one of {who} died or failed (killed, out of "
            "memory, a lost machine), and the others were stopped. The trainers keep their last "
            f"finished epoch: run the same command again to resume{first}")


def main(argv: list[str] | None = None) -> int:
    """The entry point of every process of a launched step (``python -m ...launch STEP``)."""
    from ..distributed import world
    from ..errors import RobustlabError
    from .kinds import KINDS, Context
    from .runner import captured, one_line

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    folder = Path(spec["folder"])
    w = world()
    try:
        ctx = Context(folder, spec["data_root"], spec["device"], spec["progress"] and w.main)
        if w.main:
            with captured(folder / "log.txt"):
                result = KINDS.get(spec["kind"])(spec["settings"], ctx)
            write_json(folder / RESULT, {"result": result})
        else:
            KINDS.get(spec["kind"])(spec["settings"], ctx)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # reported to the parent, then the launch fails
        write_json(folder / f"error-{w.rank}.json", {
            "rank": w.rank, "error": one_line(exc), "robustlab": isinstance(exc, RobustlabError)})
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
