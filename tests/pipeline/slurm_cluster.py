"""A real SLURM cluster on localhost for the pipeline tests (slurm-wlm + munge from Debian).

`LocalSlurm.start()` writes a slurm.conf into a private directory, starts munged (only if none is
running), slurmctld and one slurmd per node, and waits until every node is idle; `stop()` stops exactly
the daemons it started. Commands find the cluster through the SLURM_CONF variable of `env()`.

Several nodes on one machine (``nodes=2``): each node is a slurmd of its own, started with
``slurmd -N <name>``, with the name `node1`, `node2`, ... and its own port on 127.0.0.1 (``NodeAddr``),
its own spool directory, pid and log file (``%n`` in slurm.conf). Debian's slurm-wlm 22.05 accepts this
without the ``--enable-multiple-slurmd`` build. Separate loopback addresses (``NodeAddr=127.0.0.2`` and
``127.0.0.3`` with ``CommunicationParameters=NoInAddrAny``) did not work: slurmd bound to the address
its host name resolves to (127.0.0.1) and the controller never reached the nodes.

The spool directories, where slurmstepd makes its Unix sockets, lie in a short folder of their own
under /tmp: a socket path may have at most 108 bytes, and one inside pytest's deep temporary
folders can pass that (the job then never starts).

``KillWait=30`` (SLURM's default): what a job's processes have between SIGTERM and SIGKILL at its time
limit, the time a training rank has to write its checkpoint when no warning came.

A prolog gate (``hold_job_starts``/``release_job_starts``): while the file ``hold`` exists, a job that
starts waits in its prolog, allocated and with its clock running but none of its processes started,
as a slow job start on a busy cluster does; ``SlurmctldDebug=debug`` makes slurmctld log each
``--signal`` warning it sends (``warned``).

GPUs without GPUs (``gpus_per_node=2``): ``Gres=gpu:2`` on each node, and a gres.conf whose ``File=``
entries are character devices that the test creates (copies of /dev/null, so nothing can use them).
slurmd 22.05 drops GPUs that have no ``File`` ("Removing file-less GPU") and so does
``Flags=CountOnly``; plain files are accepted with an error in the log, the fallback where mknod is
not permitted. Jobs then get GPUs scheduled and ``CUDA_VISIBLE_DEVICES`` set, as on a GPU cluster.

With ``accounting=True`` the cluster also keeps job accounting as production clusters do: a private
MariaDB server (its own data directory and port, no grant tables) behind slurmdbd, so `sacct` answers;
without it `sacct` reports that accounting storage is disabled and only `squeue` knows the jobs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

MUNGE_KEY = Path("/etc/munge/munge.key")
# snakemake-executor-plugin-slurm-jobstep drops SLURM_CONF from the environment of its nested srun,
# which then only finds the default location: link it to our config while the cluster runs.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _installed(*tools: str) -> bool:
    return all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in tools)


def signal_pending(pid: int, sig: int) -> bool:
    """True when ``sig`` waits, undelivered, for process ``pid`` (e.g. while it is stopped); False once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    masks = re.findall(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$", status, re.MULTILINE)
    return any(int(mask, 16) >> (sig - 1) & 1 for mask in masks)


def slurm_available() -> bool:
    """True when the SLURM and munge daemons are installed and we may start them (root)."""
    return os.geteuid() == 0 and _installed("slurmctld", "slurmd", "munged", "sbatch", "squeue")


def accounting_available() -> bool:
    """True when slurmdbd and MariaDB are installed too (the accounting cluster)."""
    return slurm_available() and _installed("slurmdbd", "mariadbd", "mariadb-install-db", "mariadb", "sacct")


class LocalSlurm:
    """One controller and ``nodes`` compute nodes (all on this machine) in ``workdir``."""

    def __init__(self, workdir: Path, cpus: int = 8, memory_mb: int = 64000, accounting: bool = False,
                 nodes: int = 1, gpus_per_node: int = 0) -> None:
        self.workdir = Path(workdir)
        self.host = socket.gethostname()
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.accounting = accounting
        self.gpus_per_node = gpus_per_node
        # One node keeps the host's own name (slurmd finds it without -N).
        self.node_names = [self.host] if nodes == 1 else [f"node{i + 1}" for i in range(nodes)]
        self.conf = self.workdir / "slurm.conf"
        self.dbd_port = _free_port()
        self._started: list[tuple[str, Path]] = []  # (name, pid file) of the daemons we started
        self._children: dict[str, subprocess.Popen] = {}  # daemons that stay our child processes
        self._linked_default_conf = False
        self.spool: Path | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        state = self.workdir / "state"
        state.mkdir(parents=True, exist_ok=True)
        # Declared CPUs/memory may exceed this machine: config_overrides lets slurmd accept them,
        # so rules that ask for 4 CPUs are scheduled on a 2-core test machine.
        self.conf.write_text(
            f"""ClusterName=itersgtest
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
AuthType=auth/munge
StateSaveLocation={state}
SlurmdSpoolDir={self.spool}/%n
SlurmctldPidFile={self.workdir}/slurmctld.pid
SlurmdPidFile={self.workdir}/slurmd-%n.pid
SlurmctldLogFile={self.workdir}/slurmctld.log
SlurmdLogFile={self.workdir}/slurmd-%n.log
{"GresTypes=gpu" if self.gpus_per_node else ""}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
{self._accounting_conf()}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=30
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
Prolog={self.workdir}/prolog.sh
BatchStartTimeout=600
SlurmctldDebug=debug
{self._node_lines()}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        if self.gpus_per_node:
            self._write_gres_conf()
        self._write_prolog()

    def _write_prolog(self) -> None:
        """A prolog that holds every job's start while the file ``hold`` exists (see ``hold_job_starts``)."""
        prolog = self.workdir / "prolog.sh"
        prolog.write_text(f"""#!/bin/sh
[ -e {self.workdir}/hold ] || exit 0
touch {self.workdir}/held-$SLURM_JOB_ID
while [ -e {self.workdir}/hold ]; do sleep 0.2; done
""")
        prolog.chmod(0o755)

    def hold_job_starts(self) -> None:
        """From now on a job that starts waits in its prolog (allocated and running, its clock ticking,
        nothing of it started yet) until ``release_job_starts``."""
        (self.workdir / "hold").touch()

    def release_job_starts(self) -> None:
        (self.workdir / "hold").unlink(missing_ok=True)

    def held_jobs(self) -> list[str]:
        """Ids of the jobs that reached the prolog while starts were held."""
        return sorted(p.name.removeprefix("held-") for p in self.workdir.glob("held-*"))

    def warned(self, job: str) -> bool:
        """True once slurmctld has sent ``job`` its ``--signal`` warning (its log at debug level)."""
        log = (self.workdir / "slurmctld.log").read_text(errors="replace")
        return re.search(rf"warning signal \d+ to JobId={job}\b", log) is not None

    def _node_lines(self) -> str:
        gres = f" Gres=gpu:{self.gpus_per_node}" if self.gpus_per_node else ""
        lines = []
        for name in self.node_names:
            address = "" if name == self.host else f" NodeAddr=127.0.0.1 NodeHostname={self.host}"
            lines.append(f"NodeName={name}{address} Port={_free_port()} CPUs={self.cpus} "
                         f"RealMemory={self.memory_mb}{gres} State=UNKNOWN")
        return "\n".join(lines)

    def _write_gres_conf(self) -> None:
        """Count-only GPUs: device files that are copies of /dev/null (see the module docstring)."""
        devices = self.workdir / "dev"
        devices.mkdir(exist_ok=True)
        for index in range(self.gpus_per_node):
            device = devices / f"gpu{index}"
            if not device.exists():
                try:
                    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
                except PermissionError:
                    device.touch()
        last = self.gpus_per_node - 1
        files = f"{devices}/gpu[0-{last}]" if last else f"{devices}/gpu0"
        (self.workdir / "gres.conf").write_text(f"Name=gpu File={files}\n")

    def _accounting_conf(self) -> str:
        if not self.accounting:
            return "AccountingStorageType=accounting_storage/none"
        return ("AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
                f"AccountingStoragePort={self.dbd_port}")

    def _start_accounting(self, timeout: float) -> None:
        """MariaDB on a free port with a private data directory, then slurmdbd in front of it."""
        db = self.workdir / "mariadb"
        subprocess.run(["mariadb-install-db", "--user=root", f"--datadir={db}", "--skip-test-db",
                        "--auth-root-authentication-method=normal"], check=True, capture_output=True)
        db_port = _free_port()
        command = ["mariadbd", "--user=root", f"--datadir={db}", f"--socket={self.workdir}/mariadb.sock",
                   f"--port={db_port}", "--bind-address=127.0.0.1", f"--pid-file={self.workdir}/mariadb.pid",
                   "--skip-grant-tables", f"--log-error={self.workdir}/mariadb.log"]
        self._children["mariadbd"] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                      start_new_session=True)
        self._started.append(("mariadbd", self.workdir / "mariadb.pid"))
        self._wait_for(["mariadb", "-h", "127.0.0.1", "-P", str(db_port), "-u", "root", "-e", "SELECT 1"],
                      timeout, "mariadb.log")
        dbd_conf = self.workdir / "slurmdbd.conf"  # slurmdbd reads it next to SLURM_CONF; it must be 0600
        dbd_conf.write_text(f"""AuthType=auth/munge
DbdHost=localhost
DbdPort={self.dbd_port}
SlurmUser=root
PidFile={self.workdir}/slurmdbd.pid
LogFile={self.workdir}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=itersg_accounting
""")
        dbd_conf.chmod(0o600)
        subprocess.run(["/usr/sbin/slurmdbd"], env=self.env(), check=True)
        self._started.append(("slurmdbd", self.workdir / "slurmdbd.pid"))
        self._wait_for(["sacctmgr", "-n", "list", "cluster"], timeout, "slurmdbd.log")

    def _wait_for(self, command: list[str], timeout: float, log: str) -> None:
        deadline = time.monotonic() + timeout
        while subprocess.run(command, env=self.env(), capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} got no answer after {timeout}s; see {self.workdir / log}")
            time.sleep(0.5)

    def _start_munge(self) -> None:
        if MUNGE_SOCKET.exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(1024))
            MUNGE_KEY.chmod(0o400)
            shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        pid_file = MUNGE_SOCKET.parent / "munged.pid"
        subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"], check=True)
        self._started.append(("munged", pid_file))

    def start(self, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spool = Path(tempfile.mkdtemp(prefix="slurm-spool-", dir="/tmp"))
        self._write_conf()
        if DEFAULT_CONF.is_symlink() and not DEFAULT_CONF.exists():
            DEFAULT_CONF.unlink()  # left by a cluster that was killed: it points to nothing
        if not DEFAULT_CONF.exists():
            DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
            DEFAULT_CONF.symlink_to(self.conf)
            self._linked_default_conf = True
        self._start_munge()
        if self.accounting:
            self._start_accounting(timeout)
        env = self.env()
        subprocess.run(["/usr/sbin/slurmctld", "-i"], env=env, check=True)
        self._started.append(("slurmctld", self.workdir / "slurmctld.pid"))
        for name in self.node_names:
            subprocess.run(["/usr/sbin/slurmd", "-N", name], env=env, check=True)
            self._started.append((f"slurmd {name}", self.workdir / f"slurmd-{name}.pid"))
        self._wait_idle(timeout)

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env(), capture_output=True, text=True)
            states = out.stdout.split()
            if out.returncode == 0 and len(states) == len(self.node_names) and set(states) == {"idle"}:
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM nodes not idle after {timeout}s; see {self.workdir}/slurmd-*.log")

    def stop(self) -> None:
        if self._linked_default_conf:
            DEFAULT_CONF.unlink(missing_ok=True)
            self._linked_default_conf = False
        for name, pid_file in reversed(self._started):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                if name in self._children:  # reap it, or it lingers as a zombie
                    self._children.pop(name).wait(timeout=30)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            else:
                raise RuntimeError(f"{name} (pid {pid}) did not stop")
        self._started.clear()
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
