"""How the suite is shared among parallel workers (`make test`: ``pytest -n 3 --dist loadscope``).

Each test module goes to one worker as a whole, so that its fixtures are built once. The SLURM test
modules (named ``test_slurm*.py``) go together to one worker and start first: two local clusters at
once would both need /etc/slurm/slurm.conf (see pipeline/slurm_cluster.py), and they are the longest
part of the suite, most of it spent waiting for the cluster, which the other workers fill with the
rest. Modules with slow tests come next, the quick ones last, to even out the workers' ends.

A worker runs torch (and the commands it starts) on one thread: three workers with torch's default of
a thread per core would oversubscribe two cores, and OpenMP threads that spin while they wait for each
other then burn the CPU the other workers need (measured: 20 instead of 14 CPU-minutes for the suite).
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # set before anything imports torch
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SLURM_SCOPE = "slurm"


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or one unit for every ``test_slurm*.py``."""
    module = nodeid.split("::")[0]
    return SLURM_SCOPE if PurePosixPath(module).name.startswith("test_slurm") else module


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = [item.nodeid for item in items
                 if item.get_closest_marker("slurm") and scope_of(item.nodeid) != SLURM_SCOPE]
    if misplaced:
        raise pytest.UsageError(f"tests marked slurm must live in a test_slurm*.py module: {misplaced}")
    slow = {scope_of(item.nodeid) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (scope_of(item.nodeid) != SLURM_SCOPE, scope_of(item.nodeid) not in slow))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadscope`` by ``scope_of``, in collection order (the order set above)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    config.option.loadscopereorder = False
    return ModuleScheduling(config, log)
