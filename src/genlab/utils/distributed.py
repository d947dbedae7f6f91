"""DDP inside a Hydra multirun: the ranks of each job run that job alone.

Lightning's ``ddp`` strategy (``trainer=ddp`` / ``ddp_sim``) starts ranks > 0 by running the script again
(``_SubprocessScriptLauncher``). Under Hydra it repeats the whole command line, so in a multirun (``-m``) every
rank would start a sweep of its own. :func:`job_ranks` makes the children run the job's own overrides as a single
run in the job's folder instead, so a sweep of DDP jobs leaves one sweep folder with one folder per job. When an
external launcher starts the ranks (``torchrun``, SLURM's ``srun`` under submitit), Lightning starts none and
nothing here applies.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from unittest import mock

import torch

# what Lightning's launcher sets in the parent process for its children; restored after each job
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
CONFIG_FLAGS = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir")


def config_flags(argv: Sequence[str]) -> list[str]:
    """The ``--config-path/-name/-dir`` flags (and their values) of a command line, without ``-m`` and overrides."""
    kept, it = [], iter(argv)
    for arg in it:
        if arg in CONFIG_FLAGS:
            kept += [arg, next(it, "")]
        elif arg.startswith(tuple(f"{f}=" for f in CONFIG_FLAGS)):
            kept.append(arg)
    return kept


def job_command(local_rank: int, module: str) -> tuple[list[str], str]:
    """The command and working directory of rank ``local_rank`` of the running multirun job: ``python -m module``
    with the job's overrides, as a single run in the job's folder that writes no ``.hydra/`` of its own. Replaces
    Lightning's ``_hydra_subprocess_cmd``, which takes the module from ``__main__`` (under a launcher such as
    submitit, the launcher's own)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    command = [sys.executable, "-m", module]
    command += config_flags(sys.argv[1:])
    command += list(hc.overrides.task)
    command += [
        f'hydra.run.dir="{hc.runtime.output_dir}"',
        f"hydra.job.name={hc.job.name}_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


@contextmanager
def job_ranks(multirun: bool, module: str) -> Iterator[None]:
    """While open, a DDP job of a multirun starts its ranks with :func:`job_command` (``python -m module``, the entry
    point that runs the job); on exit the process group is
    destroyed and the launcher's environment variables are restored, so the next job starts afresh. Does nothing
    for a single run (Lightning's own relaunch then runs the same single job)."""
    if not multirun:
        yield
        return
    saved = {k: os.environ.get(k) for k in LAUNCH_ENV}
    try:
        with ExitStack() as stack:
            for target in (
                "lightning.fabric.strategies.launchers.subprocess_script._hydra_subprocess_cmd",
                "lightning.pytorch.strategies.launchers.subprocess_script._hydra_subprocess_cmd",
            ):
                stack.enter_context(mock.patch(target, partial(job_command, module=module)))
            yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
