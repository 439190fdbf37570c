"""A single-node SLURM for the tests: munged, slurmctld and slurmd started by hand.

Everything lives under one temporary folder (config, state, spool, logs, munge key and
socket) on private ports, and the client commands find it through ``SLURM_CONF``, so no
system configuration is read or written.  The daemons run in the foreground as children of
the test process and are stopped by PID.  Why by hand: service managers are often absent
from containers (and ``policy-rc.d`` forbids starts); why root: slurmd runs jobs as their
user and SlurmUser/SlurmdUser are root here.  Elsewhere the tests that need it are
skipped, or fail under ``ANONPIPE_REQUIRE_SLURM=1`` (what CI sets).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Slurm:
    """A running single-node SLURM: its config file, partition and node resources."""

    conf: Path
    root: Path
    partition: str
    cpus: int
    memory_mb: int

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands (and anonpipe) to use this SLURM."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def squeue(self) -> list[str]:
        """Job ids still known to the controller (pending, running or completing)."""
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return out.split()


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a single-node SLURM needs root (slurmd runs jobs as their user)"
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None
               and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"SLURM is not installed (missing {', '.join(missing)}: make system-deps)"
    return None


def _executable(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(count: int) -> list[int]:
    """Ports free now (slurmctld and slurmd take a configured port, not port 0)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _node() -> tuple[str, int, int, str]:
    """This node's name, CPUs and memory (MB) as slurmd sees them, and its full line."""
    line = subprocess.run([_executable("slurmd"), "-C"], check=True, capture_output=True,
                          text=True, timeout=30).stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in line.split())
    return fields["NodeName"], int(fields["CPUs"]), int(fields["RealMemory"]), line


def _config(root: Path, node_line: str, name: str, munge_socket: Path) -> str:
    ctld_port, slurmd_port = _free_ports(2)
    return "\n".join([
        "ClusterName=anonpipetest",
        f"SlurmctldHost={name}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "InactiveLimit=0",
        "MinJobAge=2",
        "KillWait=2",
        f"{node_line.split(' UpTime=')[0]} NodeAddr=127.0.0.1 State=UNKNOWN",
        f"PartitionName=debug Nodes={name} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _wait_idle(env: dict[str, str], procs: list[subprocess.Popen[bytes]], root: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; "
                                   f"logs in {root / 'log'}")
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, check=False,
                               text=True, timeout=30).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.2)
    raise TimeoutError(f"the SLURM node did not become idle; logs in {root / 'log'}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_slurm(root: Path) -> tuple[Slurm, list[subprocess.Popen[bytes]]]:
    """Start munged, slurmctld and slurmd under ``root``; the caller stops the processes."""
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    munge = root / "munge"
    munge.chmod(0o755)  # munged refuses a socket folder others may write, or none may read
    key = munge / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    munge_socket = munge / "munge.socket"
    name, cpus, memory, line = _node()
    conf = root / "slurm.conf"
    conf.write_text(_config(root, line, name, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = open(root / "log" / "daemons.log", "ab")  # noqa: SIM115 - the children keep it
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with logs:
            procs.append(subprocess.Popen(
                [_executable("munged"), "-F", "-f", f"--socket={munge_socket}",
                 f"--key-file={key}", f"--pid-file={munge / 'munged.pid'}",
                 f"--seed-file={munge / 'munged.seed'}",
                 f"--log-file={root / 'log' / 'munged.log'}"],
                stdout=logs, stderr=subprocess.STDOUT, env=env))
            deadline = time.monotonic() + START_TIMEOUT
            while not munge_socket.exists():
                if procs[0].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"munged did not start; logs in {root / 'log'}")
                time.sleep(0.05)
            procs.append(subprocess.Popen([_executable("slurmctld"), "-D", "-i"],
                                          stdout=logs, stderr=subprocess.STDOUT, env=env))
            procs.append(subprocess.Popen([_executable("slurmd"), "-D", "-N", name],
                                          stdout=logs, stderr=subprocess.STDOUT, env=env))
        _wait_idle(env, procs, root)
    except BaseException:
        _stop(procs)
        raise
    return Slurm(conf, root, "debug", cpus, memory), procs


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A single-node SLURM shared by the tests (skipped where it cannot run: see the module)."""
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("ANONPIPE_REQUIRE_SLURM") == "1":
            pytest.fail(f"{reason}, and ANONPIPE_REQUIRE_SLURM=1")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    cluster, procs = start_slurm(root)
    try:
        yield cluster
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", "--full", "--user", "root"], env=cluster.env, check=False,
                           capture_output=True, timeout=30)
        _stop(procs)
