"""What genlab's Hydra launcher configs (``conf/hydra/launcher/``) compute: threads per job, and a SLURM job's shape.

Importing this module registers the ``genlab.*`` resolvers those configs use. ``genlab/__init__.py`` imports it, so
they exist before Hydra resolves ``hydra.launcher`` (in the process that starts the sweep) and ``hydra.job.env_set``
(in each job's process, which imports genlab when it unpickles the task).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from genlab.errors import ConfigError


class LauncherConfigError(ConfigError, InterpolationResolutionError, CompactHydraException):
    """A launcher setting that cannot work. Raised while Hydra resolves ``hydra.launcher``, before any job starts:
    OmegaConf passes it on unwrapped (an ``InterpolationResolutionError``) and Hydra prints its message alone, without
    a traceback (a ``CompactHydraException``)."""


def usable_cpus() -> int:
    """The number of CPU cores this process may use: joblib's count, which honours the CPU affinity (``taskset``,
    SLURM's cgroup), a container's CPU quota and ``LOKY_MAX_CPU_COUNT``; ``os.cpu_count()`` without joblib."""
    try:
        from joblib import cpu_count
    except ImportError:  # joblib comes with the joblib launcher and scikit-learn; a bare install still works
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, int(cpu_count()))


def whole(value: Any, name: str) -> int:
    """``value`` if it is a positive whole number (``bool`` is not).

    Raises:
        LauncherConfigError: naming ``name`` for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LauncherConfigError(f"{name} must be a positive whole number, got {value!r}")
    return value


def jobs_at_once(n_jobs: Any) -> int:
    """How many jobs joblib runs at once for ``n_jobs``: ``n_jobs`` itself when positive, ``usable_cpus() + 1 +
    n_jobs`` when negative (joblib's meaning: -1 one job per core, -2 all cores but one), at least 1.

    Raises:
        LauncherConfigError: for 0, ``null`` or anything else that is not a whole number.
    """
    if isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs < 0:
        return max(1, usable_cpus() + 1 + n_jobs)
    return whole(n_jobs, "hydra.launcher.n_jobs (or -1: one job per core)")


def threads_per_job(n_jobs: Any) -> int:
    """Intra-op threads for each of ``n_jobs`` jobs running at once: ``usable_cpus() // jobs_at_once(n_jobs)``, at
    least 1, so the jobs together never ask for more threads than there are cores (unless ``n_jobs`` itself does).

    Raises:
        LauncherConfigError: for an ``n_jobs`` that :func:`jobs_at_once` refuses.
    """
    return max(1, usable_cpus() // jobs_at_once(n_jobs))


def task_threads(cpus_per_task: Any) -> int:
    """The threads of one launcher task: ``cpus_per_task`` (the cores SLURM gives each task), 1 when it is ``null``.

    Raises:
        LauncherConfigError: for anything else than ``null`` or a positive whole number.
    """
    return 1 if cpus_per_task is None else whole(cpus_per_task, "hydra.launcher.cpus_per_task (or null)")


def tasks_per_node(devices: Any) -> int:
    """The SLURM tasks (Lightning ranks) of one node for ``trainer.devices``: the number itself (``2``, ``"2"``), or
    the length of a device list (``[0, 1]``, ``"0,1"``). srun starts one task per rank, so Lightning, which sees them
    through its ``SLURMEnvironment``, never starts processes itself.

    Raises:
        LauncherConfigError: for ``-1``, ``"auto"`` or anything else that does not say how many devices: SLURM must know
            before the job starts. Pass ``trainer.devices=<n>``, or ``hydra.launcher.tasks_per_node=<n>`` (which
            replaces this interpolation; ``trainer.devices=-1`` then takes the GPUs SLURM gives the node).
    """
    if isinstance(devices, str) and "," in devices:
        devices = [d for d in devices.split(",") if d.strip()]
    elif isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, Sequence) and not isinstance(devices, str) and len(devices) > 0:
        return len(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    raise LauncherConfigError(
        f"hydra/launcher=slurm needs trainer.devices to be the number of devices (ranks) per node, got {devices!r}: "
        f"SLURM reserves them before the job starts; pass trainer.devices=<n>, or hydra.launcher.tasks_per_node=<n> "
        f"(trainer.devices=-1 then takes the GPUs SLURM gives the node)"
    )


def gpus_per_node(accelerator: Any, tasks: Any) -> int | None:
    """The GPUs to reserve on each node: one per task, or ``None`` (no GPUs) for ``trainer.accelerator=cpu``.
    ``auto`` reserves GPUs too (Lightning then trains on them); pass ``trainer.accelerator=cpu`` for CPU nodes.

    Raises:
        LauncherConfigError: for a ``tasks`` that is not a positive whole number.
    """
    tasks = whole(tasks, "hydra.launcher.tasks_per_node")
    return None if str(accelerator).lower() == "cpu" else tasks


def num_nodes(nodes: Any) -> int:
    """The SLURM nodes of a job for ``trainer.num_nodes``: 1 when it is absent or ``null``, else the number.

    Raises:
        LauncherConfigError: for anything else than ``null`` or a positive whole number.
    """
    return 1 if nodes is None else whole(nodes, "trainer.num_nodes (or null)")


for _name, _resolver in {"threads_per_job": threads_per_job, "task_threads": task_threads,
                         "tasks_per_node": tasks_per_node, "gpus_per_node": gpus_per_node,
                         "num_nodes": num_nodes}.items():  # fmt: skip
    OmegaConf.register_new_resolver(f"genlab.{_name}", _resolver, replace=True)
