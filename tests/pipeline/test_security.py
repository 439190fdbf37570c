"""A run defends the secret, the store and the trees against other users and the user's own
mistakes: the installed ``anonpipe`` command on real files, folders, links and certificates.

Every refusal is checked the same way: exit 2, one line on stderr, and nothing written (no
output, no store, no secret, no report).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.leftovers import _unlink_below
from pipeline.sample import generate_archive
from pipeline.state import _private_group
from tasks import fileio
from tests.conftest import ANONPIPE, Pki, make_pair, pydicom_file, require_tool, run_command

PASSWORD = "correct horse battery staple"
OTHER_UID = 65534  # nobody


def anonpipe(*args: str, env: dict[str, str] | None = None, state: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    extra = {**(env or {})}
    if state is not None:
        extra["ANONPIPE_STATE_DIR"] = str(state)
    return run_command("anonpipe", *args, env=extra)


def everything(*roots: Path) -> list[str]:
    """Every path under ``roots`` (links not followed): what a run may have written."""
    found = []
    for root in roots:
        if os.path.lexists(root):
            found.append(str(root))
            if root.is_dir() and not root.is_symlink():
                found += sorted(str(p) for p in root.rglob("*"))
    return found


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run was refused as a usage error in one line naming ``words``."""
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    return proc.stderr


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    return folder


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "site.secret"
    path.parent.mkdir(mode=0o700)
    path.write_text("00" * 32 + "\n")
    path.chmod(0o600)
    return path


def _small_tree(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "P1" / "ST1").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom_file(name), src / "P1" / "ST1" / name)
    return src


# --------------------------------------------------------------------------- 1. the cluster

#: another user's process on the machine: tries each TLS port in plain TCP (as one reaches
#: an open dask scheduler) and with a certificate authority of its own, and prints how
#: each attempt ended
STRANGER = """
import sys
from distributed import Client
from distributed.security import Security

for port in sys.argv[1:]:
    for scheme, security in (("tcp", None), ("tls", Security.temporary())):
        try:
            with Client(f"{scheme}://127.0.0.1:{port}", security=security, timeout="2s",
                        set_as_default=False) as client:
                print(port, scheme, "connected", client.run(lambda: 1))
        except Exception as exc:
            print(port, scheme, "refused", type(exc).__name__)
"""


def _listening(pid: int) -> dict[int, str]:
    """TCP port -> address ``pid`` listens on."""
    import psutil

    return {c.laddr[1]: c.laddr[0] for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


def _workers(processes: dict[int, Any]) -> int:
    """How many of ``processes`` (psutil's) are dask workers: processes multiprocessing
    spawned (a LocalCluster's nannies start their workers that way)."""
    import psutil

    count = 0
    for process in processes.values():
        with contextlib.suppress(psutil.Error):
            count += "multiprocessing.spawn" in " ".join(process.cmdline())
    return count


def _speaks_tls(port: int) -> bool:
    import ssl

    try:
        return bool(ssl.get_server_certificate(("127.0.0.1", port), timeout=5))
    except (OSError, ssl.SSLError):
        return False


def _stranger(addresses: list[str]) -> list[str]:
    found = subprocess.run([sys.executable, "-c", STRANGER, *addresses], capture_output=True,
                           text=True, timeout=180, check=True)
    return found.stdout.splitlines()


def test_a_stranger_cannot_use_the_scheduler_of_a_running_anonpipe(tmp_path: Path,
                                                                   state: Path,
                                                                   secret: Path) -> None:
    """The installed command with a dask cluster (--dashboard): while the run waits for
    its workers (held stopped by the test), another process tries every TLS port the run
    listens on (its scheduler among them) in plain TCP and with a certificate authority
    of its own, and is refused each time; every port, the dashboard's included, is bound
    to 127.0.0.1.  Then the run goes on and finishes."""
    import signal

    import psutil

    src = tmp_path / "in"
    files = len(generate_archive(src, patients=1, studies=1, series=2, instances=3))
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [ANONPIPE, "--irreversible", "-r", "--dashboard", "--workers", "2", "--secret-file",
         str(secret), str(src), str(tmp_path / "out")], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "ANONPIPE_STATE_DIR": str(state)})
    stopped: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 90
        ports: dict[int, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                if child.pid not in stopped:
                    with contextlib.suppress(psutil.Error):
                        child.send_signal(signal.SIGSTOP)  # the workers wait
                        stopped[child.pid] = child
            ports = _listening(proc.pid)
            # the scheduler and its dashboard at least, and both workers held (the first
            # child is multiprocessing's resource tracker: with it alone, the run would go
            # on and close its ports while they are tried)
            if _workers(stopped) >= 2 and len(ports) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None and _workers(stopped) >= 2 and len(ports) >= 2, ports
        assert set(ports.values()) == {"127.0.0.1"}, ports
        encrypted = [port for port in ports if _speaks_tls(port)]
        assert encrypted, ports
        lines = _stranger([str(port) for port in encrypted])
        assert len(lines) == 2 * len(encrypted), lines
        assert all(line.split()[2] == "refused" for line in lines), lines
        for child in stopped.values():
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=180) == 0, (tmp_path / "run.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        for child in stopped.values():  # nothing of the run may outlive it
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGCONT)
                child.wait(timeout=10)
            with contextlib.suppress(psutil.Error):
                child.kill()
        log.close()
    assert sum(1 for _ in (tmp_path / "out").rglob("*.dcm")) == files
    assert "dask dashboard: http://127.0.0.1:" in (tmp_path / "run.log").read_text()


def test_the_job_queues_tls_folder_must_be_safe(tmp_path: Path, state: Path,
                                                secret: Path) -> None:
    """The run's TLS key goes to the cluster config's shared_temp_directory (in a private
    folder made there): one that others may write without the sticky bit is refused in one
    line, before any job is submitted or anything written."""
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    shared = tmp_path / "scratch"
    shared.mkdir()
    shared.chmod(0o777)
    config = tmp_path / "queue.yaml"
    config.write_text(f"kind: slurm\nworkers: 1\noptions:\n  cores: 1\n  memory: 1GiB\n"
                      f"  shared_temp_directory: {shared}\n")
    argv = ["--irreversible", "-r", "--cluster", str(config), "--secret-file", str(secret),
            str(src), str(out)]
    refused(anonpipe(*argv, state=state), "TLS certificates' folder", f"lies in {shared}",
            "other users can write")
    assert not out.exists() and not any(shared.iterdir()) and not any(state.iterdir())


# --------------------------------------------------------------------------- 2. state folders


def _unowned(folder: Path) -> Path:
    """A folder another user owns: made and given away as root, else one of the system's."""
    if os.geteuid() == 0:
        folder.mkdir(mode=0o755)
        os.chown(folder, OTHER_UID, OTHER_UID)
        return folder
    return Path("/usr/share")


def test_unsafe_state_store_and_secret_folders_are_refused(
        tmp_path: Path, state: Path, secret: Path, pki: Pki) -> None:
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o1777)  # like /tmp: sticky, but anyone can plant a file
    group_folder = tmp_path / "group"
    group_folder.mkdir()
    group_folder.chmod(0o770)
    if os.geteuid() == 0:
        os.chown(group_folder, -1, OTHER_UID)  # a shared group: its members could plant files
    theirs = _unowned(tmp_path / "theirs")
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    cases = [
        ({"ANONPIPE_STATE_DIR": str(open_folder)}, [], ("state folder", "writable by other")),
        ({"ANONPIPE_STATE_DIR": str(theirs)}, [], ("state folder", "another user")),
        ({}, ["--store", str(open_folder / "run.sqlite")], ("store's folder", "writable")),
        *([({}, ["--store", str(group_folder / "run.sqlite")], ("store's folder", "writable"))]
          if not _private_group(group_folder.stat().st_gid) else []),
        ({}, ["--store", str(theirs / "run.sqlite")], ("store's folder", "another user")),
    ]
    for env, extra, words in cases:
        before = everything(open_folder, group_folder, tmp_path / "theirs", state)
        proc = anonpipe(*base, *extra, str(src), str(out), env=env,
                        state=None if env else state)
        refused(proc, *words)
        assert not out.exists()
        assert everything(open_folder, group_folder, tmp_path / "theirs", state) == before
    # a secret in a folder others can write, or through a link, or of another user
    planted = open_folder / "site.secret"
    planted.write_text("11" * 32)
    planted.chmod(0o600)
    refused(anonpipe(*base[:-2], "--secret-file", str(planted), str(src), str(out), state=state),
            "secret's folder", "writable by other")
    assert not out.exists() and not any(state.iterdir())


def test_folders_above_the_state_store_and_secret_are_checked(
        tmp_path: Path, state: Path, secret: Path, pki: Pki) -> None:
    """Whoever may rename the entries of a folder on the way could swap the user's private
    folder for theirs: a folder above that others can write (not sticky), or that another
    user owns, is refused; a sticky one like /tmp is not."""
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename what it holds
    for name in ("state", "keys", "runs"):
        (shared / name).mkdir(mode=0o700)
    planted = shared / "keys" / "site.secret"
    planted.write_text("22" * 32)
    planted.chmod(0o600)
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0"]
    cases = [
        ([*base, "--secret-file", str(secret)], shared / "state", "state folder"),
        ([*base, "--secret-file", str(planted)], state, "secret's folder"),
        ([*base, "--secret-file", str(secret), "--store", str(shared / "runs" / "r.sqlite")],
         state, "store's folder"),
        # through a link the user made: the folder the link leads to is checked too
        ([*base, "--secret-file", str(secret), "--store",
          str(tmp_path / "runs-link" / "r.sqlite")], state, "store's folder"),
    ]
    os.symlink(shared / "runs", tmp_path / "runs-link")
    for argv, state_folder, what in cases:
        before = everything(shared, state)
        line = refused(anonpipe(*argv, str(src), str(out), state=state_folder), what,
                       f"lies in {shared}", "other users can write (mode 0777)")
        assert "chmod go-w" in line
        assert everything(shared, state) == before and not out.exists()
    if os.geteuid() == 0:  # a folder on the way that another user owns
        theirs = tmp_path / "theirs"
        (theirs / "keys").mkdir(parents=True, mode=0o700)
        os.chown(theirs, OTHER_UID, OTHER_UID)
        key = theirs / "keys" / "site.secret"
        shutil.copy(secret, key)
        refused(anonpipe(*base, "--secret-file", str(key), str(src), str(out), state=state),
                "secret's folder", f"lies in {theirs}", "another user")
        assert not out.exists()
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: only an entry's owner may rename it
    (sticky / "runs").mkdir(mode=0o700)
    proc = anonpipe(*base, "--secret-file", str(secret), "--store",
                    str(sticky / "runs" / "r.sqlite"), str(src), str(out), state=state)
    assert proc.returncode == 0, proc.stderr


def test_the_pixels_preview_folder_is_private(tmp_path: Path, state: Path, secret: Path,
                                             pki: Pki) -> None:
    """The preview images show the burned-in text: their folder is checked like the state
    folder (and must be closed to others), and made 0700 when missing."""
    from tests import pixel_images

    src = tmp_path / "in"
    src.mkdir()
    pixel_images.secondary_capture(src / "sc.dcm")
    out = tmp_path / "out"
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    open_preview = tmp_path / "open-preview"
    open_preview.mkdir(mode=0o755)
    open_preview.chmod(0o755)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "preview").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "preview-link")
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    for folder, words in ((open_preview, ("open to other users", "chmod 700")),
                          (tmp_path / "preview-link", ("symbolic link",)),
                          (shared / "preview", (f"lies in {shared}",)),
                          (shared / "new-preview", (f"lies in {shared}",))):
        refused(anonpipe(*base, "--pixels-preview", str(folder), str(src), str(out),
                         state=state), "--pixels-preview folder", *words)
        assert not out.exists() and not os.path.lexists(shared / "new-preview")
        assert not list(tmp_path.glob("*/*.png"))
    # refused before the per-user secret would be made
    refused(anonpipe("-c", str(pki.cert), "-e", "-r", "--workers", "0", "--pixels-preview",
                     str(open_preview), str(src), str(out), state=state), "chmod 700")
    assert not any(state.iterdir())
    preview = tmp_path / "previews" / "run1"
    (tmp_path / "previews").mkdir(mode=0o700)
    proc = anonpipe(*base, "--pixels-preview", str(preview), str(src), str(out), state=state)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(preview.stat().st_mode) == 0o700
    images = list(preview.glob("*.png"))
    assert len(images) == 1 and stat.S_IMODE(images[0].stat().st_mode) == 0o600


def test_a_folder_writable_only_by_the_users_own_group_is_accepted(
        tmp_path: Path, state: Path, secret: Path, pki: Pki) -> None:
    """A umask of 002 with one group per user (Debian's default for users) is no risk."""
    shared = tmp_path / "runs"
    shared.mkdir()
    shared.chmod(0o770)
    proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file",
                    str(secret), "--store", str(shared / "run.sqlite"), str(_small_tree(tmp_path)),
                    str(tmp_path / "out"), state=state)
    if _private_group(shared.stat().st_gid):
        assert proc.returncode == 0, proc.stderr
    else:
        refused(proc, "writable by other users")


def test_secret_and_store_are_not_followed_through_links(tmp_path: Path, state: Path,
                                                        secret: Path, pki: Pki) -> None:
    """A secret planted through a link beside the --store (and a store through a link)."""
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o700)
    os.symlink(secret, runs / "run.sqlite.secret")
    proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--workers", "0", "--store",
                    str(runs / "run.sqlite"), str(src), str(out), state=state)
    refused(proc, "symbolic link")
    assert not out.exists() and sorted(p.name for p in runs.iterdir()) == ["run.sqlite.secret"]
    os.unlink(runs / "run.sqlite.secret")
    store = tmp_path / "elsewhere.sqlite"
    store.write_bytes(b"")
    store.chmod(0o600)
    os.symlink(store, runs / "run.sqlite")
    proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file",
                    str(secret), "--store", str(runs / "run.sqlite"), str(src), str(out),
                    state=state)
    refused(proc, "symbolic link")
    assert store.read_bytes() == b"" and not out.exists()


def test_a_secret_or_store_of_another_user_is_refused(tmp_path: Path, state: Path,
                                                     secret: Path, pki: Pki) -> None:
    """As root, files given away in the user's own folder; otherwise, files of root's."""
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    store = tmp_path / "keys" / "run.sqlite"
    if os.geteuid() == 0:
        os.chown(secret, OTHER_UID, OTHER_UID)
        refused(anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", str(secret),
                         str(src), str(out), state=state), "another user")
        os.chown(secret, 0, 0)
        store.write_bytes(b"")
        store.chmod(0o600)
        os.chown(store, OTHER_UID, OTHER_UID)
    else:
        refused(anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", "/etc/hostname",
                         str(src), str(out), state=state), "another user")
        store = Path("/etc/anonpipe-run.sqlite")
    refused(anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", str(secret), "--store",
                     str(store), str(src), str(out), state=state), "another user")
    assert not out.exists() and not any(state.iterdir())


def test_no_state_inside_the_input_or_the_output(tmp_path: Path, state: Path, secret: Path,
                                                pki: Pki) -> None:
    src = _small_tree(tmp_path)
    out = tmp_path / "out"
    for where, name in ((out / "state", "output"), (src / "state", "input")):
        proc = anonpipe("-c", str(pki.cert), "-e", "-r", "--secret-file", str(secret),
                        str(src), str(out), env={"ANONPIPE_STATE_DIR": str(where)})
        refused(proc, "state folder", f"inside the {name} folder")
        assert not where.exists() and not out.exists()


# --------------------------------------------------------------------------- 3. links in the trees


def test_a_link_in_the_output_tree_is_never_followed(tmp_path: Path, state: Path,
                                                    secret: Path, pki: Pki) -> None:
    src = _small_tree(tmp_path)
    (src / "P2").mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), src / "P2" / "CT_small.dcm")
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "ST1").mkdir()
    victim = outside / "victim.dcm"
    victim.write_bytes(b"not to be touched")

    def plant() -> None:
        os.symlink(outside, out / "P1")  # a folder of the output replaced by a link
        (out / "P2").mkdir(exist_ok=True)
        os.symlink(victim, out / "P2" / "CT_small.dcm")  # an output file replaced by a link

    plant()
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    # files no run of this store wrote: the run stops before writing
    stopped = anonpipe(*base, "--continue", str(src), str(out), state=state)
    assert stopped.returncode == 2, stopped.stderr
    assert "no run of this store wrote" in stopped.stderr
    # --force: the links refuse their files, then the links themselves (not their targets)
    # are removed as files the run did not produce
    proc = anonpipe(*base, "--continue", "--force", str(src), str(out), state=state)
    assert proc.returncode == 1, proc.stderr
    assert "symbolic link" in proc.stderr and "refused" in proc.stderr
    assert "P1" not in proc.stderr and "CT_small" not in proc.stderr  # paths only with -D
    assert everything(outside) == [str(outside), str(outside / "ST1"), str(victim)]
    assert victim.read_bytes() == b"not to be touched"
    assert not os.path.lexists(out / "P1") and not os.path.lexists(out / "P2" / "CT_small.dcm")
    for output in out.rglob("*.dcm"):  # what was written is no link and lies inside
        assert not output.is_symlink() and output.resolve().is_relative_to(out.resolve())
    plant()
    debug = anonpipe(*base, "--continue", "--force", "-D", str(src), str(out), state=state)
    assert "P1/ST1/CT_small.dcm" in debug.stderr and "P2/CT_small.dcm" in debug.stderr
    assert everything(outside) == [str(outside), str(outside / "ST1"), str(victim)]
    assert victim.read_bytes() == b"not to be touched"


def test_input_links_leaving_the_tree_are_skipped(tmp_path: Path, state: Path, secret: Path,
                                                 pki: Pki) -> None:
    src = _small_tree(tmp_path)
    private = tmp_path / "private"
    private.mkdir()
    shutil.copy(pydicom_file("rtplan.dcm"), private / "rtplan.dcm")
    os.symlink(private / "rtplan.dcm", src / "leak.dcm")
    os.symlink(private, src / "leakdir")
    os.symlink(src / "P1" / "ST1" / "CT_small.dcm", src / "alias.dcm")  # inside: followed
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    out = tmp_path / "out"
    proc = anonpipe(*base, str(src), str(out), state=state)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.dcm"))
    assert written == ["P1/ST1/CT_small.dcm", "P1/ST1/MR_small.dcm", "alias.dcm"]
    assert "LinkOutsideInput" in proc.stderr and "leak" not in proc.stderr
    followed = tmp_path / "followed"
    proc = anonpipe(*base, "--follow-symlinks", str(src), str(followed), state=state)
    assert proc.returncode == 0, proc.stderr
    assert (followed / "leak.dcm").is_file() and (followed / "leakdir" / "rtplan.dcm").is_file()


def _temp_of(folder: Path, name: str) -> Path:
    """A temp file as a killed writer of ``folder/name`` leaves it (tasks.fileio)."""
    path = folder / f".{name}{fileio.TEMP_MARKER}4242-0badcafe"
    path.write_bytes(b"half an output")
    return path


def test_cleaning_temp_files_never_follows_a_link_in_the_output_tree(tmp_path: Path) -> None:
    """After a lost worker the driver removes the temp files of its batch's outputs; a
    folder of the output tree replaced by a link leads nowhere (the link's target keeps
    files that merely look like temps), while a real folder is cleaned."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / "P2").mkdir(parents=True)
    outside.mkdir()
    bait = _temp_of(outside, "CT_small.dcm")
    os.symlink(outside, out / "P1")
    ours = _temp_of(out / "P2", "CT_small.dcm")
    assert fileio.remove_temp_files_of(out / "P1" / "CT_small.dcm", out) == 0
    assert bait.read_bytes() == b"half an output"
    assert fileio.remove_temp_files_of(out / "P2" / "CT_small.dcm", out) == 1
    assert not ours.exists()
    # a temp-named link is not followed either: its target stays
    os.symlink(bait, out / "P2" / f".x.dcm{fileio.TEMP_MARKER}1-2")
    assert fileio.remove_temp_files_of(out / "P2" / "x.dcm", out) == 0
    assert bait.is_file()
    # the sweep of a rerun: through the output folder the user named (a link here), never
    # into a link inside it
    os.symlink(out, tmp_path / "named")
    again = _temp_of(out / "P2", "MR_small.dcm")
    assert fileio.sweep_temp_files(tmp_path / "named") == 1
    assert not again.exists() and bait.read_bytes() == b"half an output"


def test_removing_stale_outputs_never_follows_a_link(tmp_path: Path) -> None:
    """What a --force rerun does with outputs the settings did not produce: a folder
    swapped for a link after the output was listed leads nowhere."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / "P2" / "ST1").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.dcm").write_bytes(b"theirs")
    (out / "P2" / "ST1" / "x.dcm").write_bytes(b"stale")
    os.symlink(outside, out / "P1")
    with pytest.raises(OSError):
        _unlink_below(out, "P1/x.dcm")
    assert (outside / "x.dcm").read_bytes() == b"theirs"
    _unlink_below(out, "P2/ST1/x.dcm")
    assert sorted(p.name for p in out.iterdir()) == ["P1"]  # the folders left empty go
    _unlink_below(out, "P1")  # the link itself, not what it points to
    assert list(out.iterdir()) == [] and (outside / "x.dcm").is_file()


def test_a_rerun_cleans_only_its_own_tree(tmp_path: Path, state: Path, secret: Path,
                                         pki: Pki) -> None:
    """A rerun removes the temp files an interrupted run left in the output, walking the
    tree by descriptor, and with --force the files no run wrote: a link planted in the
    tree is removed, never entered."""
    src = _small_tree(tmp_path)
    out, outside = tmp_path / "out", tmp_path / "outside"
    base = ["-c", str(pki.cert), "-e", "-r", "--workers", "0", "--secret-file", str(secret)]
    first = anonpipe(*base, str(src), str(out), state=state)
    assert first.returncode == 0, first.stderr
    outside.mkdir()
    left = _temp_of(out / "P1" / "ST1", "CT_small.dcm")
    bait = _temp_of(outside, "MR_small.dcm")
    (outside / "MR_small.dcm").write_bytes(b"not an output")
    os.symlink(outside, out / "elsewhere")
    proc = anonpipe(*base, "--force", str(src), str(out), state=state)
    assert proc.returncode == 0, proc.stderr
    assert not left.exists() and not os.path.lexists(out / "elsewhere")
    assert bait.read_bytes() == b"half an output"
    assert (outside / "MR_small.dcm").read_bytes() == b"not an output"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "P1", "P1/ST1", "P1/ST1/CT_small.dcm", "P1/ST1/MR_small.dcm"]


# --------------------------------------------------------------------------- 4. keys, passwords


def _certificate(folder: Path, name: str, bits: int = 2048, usage: str | None = None,
                 expired: bool = False) -> Path:
    """A self-signed certificate (conftest.make_pair), backdated with cryptography."""
    key, cert = make_pair(folder, name, bits, usage)
    if expired:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        private = serialization.load_pem_private_key(key.read_bytes(), None)
        old = x509.load_pem_x509_certificate(cert.read_bytes())
        now = datetime.datetime.now(datetime.UTC)
        built = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer)
                 .public_key(old.public_key()).serial_number(old.serial_number)
                 .not_valid_before(now - datetime.timedelta(days=400))
                 .not_valid_after(now - datetime.timedelta(days=35))
                 .sign(private, hashes.SHA256()))  # type: ignore[arg-type]
        cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    return cert


def test_weak_and_signing_only_certificates_are_refused(tmp_path: Path, state: Path,
                                                       secret: Path) -> None:
    src = pydicom_file("CT_small.dcm")
    out = tmp_path / "out.dcm"
    weak = _certificate(tmp_path, "weak", bits=1024)
    signing = _certificate(tmp_path, "signing", usage="digitalSignature")
    base = ["-e", "--secret-file", str(secret)]
    refused(anonpipe(*base, "-c", str(weak), str(src), str(out), state=state),
            "1024 bits", "--allow-weak-keys")
    refused(anonpipe(*base, "-c", str(signing), str(src), str(out), state=state),
            "keyEncipherment")
    assert not out.exists() and not any(state.iterdir())
    for cert in (weak, signing):  # test keys: the flag takes them
        proc = anonpipe(*base, "--allow-weak-keys", "-c", str(cert), str(src), str(out),
                        state=state)
        assert proc.returncode == 0 and out.is_file(), proc.stderr
        out.unlink()
    good = _certificate(tmp_path, "good", usage="keyEncipherment,digitalSignature")
    assert anonpipe(*base, "-c", str(good), str(src), str(out), state=state).returncode == 0


def test_an_expired_certificate_is_warned_about(tmp_path: Path, state: Path,
                                               secret: Path) -> None:
    out = tmp_path / "out.dcm"
    expired = _certificate(tmp_path, "expired", expired=True)
    proc = anonpipe("-e", "--secret-file", str(secret), "-c", str(expired),
                    str(pydicom_file("rtplan.dcm")), str(out), state=state)
    assert proc.returncode == 0 and out.is_file()
    assert proc.stderr.startswith(f"anonpipe: warning: certificate {expired} expired on ")
    assert len(proc.stderr.splitlines()) == 1


def test_password_from_a_file_or_the_environment_and_gdcmanon_opens_it(
        tmp_path: Path, state: Path, secret: Path) -> None:
    """600,000 PBKDF2 iterations (asn1parse shows them), opened by gdcmanon -d -p."""
    import pydicom

    gdcmanon = require_tool("gdcmanon")
    src = pydicom_file("rtplan.dcm")  # no preamble data: nothing else to warn about
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    by_file, by_env = tmp_path / "file.dcm", tmp_path / "env.dcm"
    proc = anonpipe("-e", "--profile", "gdcmanon", "--secret-file", str(secret),
                    "--password-file", str(password_file), str(src), str(by_file), state=state)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    proc = anonpipe("-e", "--profile", "gdcmanon", "--secret-file", str(secret), str(src),
                    str(by_env), env={"ANONPIPE_PASSWORD": PASSWORD}, state=state)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for deid in (by_file, by_env):
        payload = tmp_path / "payload.der"
        blob = pydicom.dcmread(deid)[0x04000500][0][0x04000520].value
        size = blob[1] & 0x7F  # a DER long length: drop the pad byte after the envelope
        payload.write_bytes(blob[:2 + size + int.from_bytes(blob[2:2 + size], "big")])
        listing = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in",
                                  str(payload)], capture_output=True, text=True, check=True)
        assert "INTEGER           :0927C0" in listing.stdout, listing.stdout  # 600,000
        back = tmp_path / f"gdcm-{deid.name}"
        done = subprocess.run([gdcmanon, "-d", "-p", PASSWORD, str(deid), str(back)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr + done.stdout
        ours = tmp_path / f"ours-{deid.name}"
        assert anonpipe("-d", "--password-file", str(password_file), str(deid), str(ours),
                        state=state).returncode == 0
        assert ours.read_bytes() == src.read_bytes()
    on_argv = anonpipe("-d", "-p", PASSWORD, str(by_file), str(tmp_path / "argv.dcm"),
                       state=state)
    assert on_argv.returncode == 0
    assert "warning: -p shows the password" in on_argv.stderr and PASSWORD not in on_argv.stderr
    both = anonpipe("-d", "-p", PASSWORD, "--password-file", str(password_file), str(by_file),
                    str(tmp_path / "both.dcm"), state=state)
    refused(both, "give the password once")
    password_file.chmod(0o644)
    shared = anonpipe("-d", "--password-file", str(password_file), str(by_file),
                      str(tmp_path / "shared.dcm"), state=state)
    assert shared.returncode == 0 and "password file" in shared.stderr
    assert "readable by other users" in shared.stderr and PASSWORD not in shared.stderr
    missing = anonpipe("-d", "--password-file", str(tmp_path / "no-such-file"), str(by_file),
                       str(tmp_path / "missing.dcm"), state=state)
    refused(missing, "cannot read the password file")
    assert not (tmp_path / "missing.dcm").exists()
    # the environment's password only adds a recipient where there is a payload
    plain = tmp_path / "irreversible.dcm"
    assert anonpipe("-e", "--irreversible", "--secret-file", str(secret), str(src), str(plain),
                    env={"ANONPIPE_PASSWORD": PASSWORD}, state=state).returncode == 0


@pytest.mark.parametrize("workers", ["0", "2"], ids=["inline", "worker-processes"])
def test_the_password_never_shows_in_ps(tmp_path: Path, state: Path, secret: Path,
                                        workers: str) -> None:
    """Neither the run nor the worker processes it starts show the password."""
    import psutil

    archive = tmp_path / "in"  # enough files for the process pool when there are workers
    files = len(generate_archive(archive, patients=1, studies=1, series=1, instances=2)
                if workers == "0" else
                generate_archive(archive, patients=3, studies=2, series=5, instances=9))
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    proc = subprocess.Popen(
        [ANONPIPE, "-e", "-r", "--workers", workers, "--secret-file", str(secret),
         "--password-file", str(password_file), str(archive), str(tmp_path / "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ANONPIPE_STATE_DIR": str(state)})
    seen, children = 0, set()
    try:
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children.update(child.pid for child in
                               psutil.Process(proc.pid).children(recursive=True))
            listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                                     check=True).stdout
            with contextlib.suppress(psutil.Error):  # workers started since the first look
                children.update(child.pid for child in
                               psutil.Process(proc.pid).children(recursive=True))
            # the run's own processes (other programs on the machine may say anything)
            ours = {str(pid) for pid in (proc.pid, *children)}
            lines = [line.strip().split(None, 1) for line in listing.splitlines()[1:]]
            args = [rest[0] for pid, *rest in lines if pid in ours and rest]
            assert not any(PASSWORD in a or "horse" in a for a in args), args
            seen += str(proc.pid) in {pid for pid, *_ in lines}
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen  # the run was listed while it worked
    if workers != "0":
        assert children, "no worker process was listed while the run worked"
    assert sum(1 for _ in (tmp_path / "out").rglob("*.dcm")) == files


# --------------------------------------------------------------------------- 5. output modes


def test_outputs_are_never_more_readable_than_their_input(tmp_path: Path, state: Path,
                                                         secret: Path, pki: Pki) -> None:
    src = tmp_path / "private.dcm"
    shutil.copy(pydicom_file("CT_small.dcm"), src)
    src.chmod(0o600)
    deid, back, dumb = tmp_path / "deid.dcm", tmp_path / "back.dcm", tmp_path / "dumb.dcm"
    for argv, dst in ((["-c", str(pki.cert), "-e", "--secret-file", str(secret), str(src)], deid),
                      (["-k", str(pki.key), "-d", str(deid)], back),
                      (["--dumb", "--remove", "10,10", str(src)], dumb)):
        proc = anonpipe(*argv, str(dst), state=state)
        assert proc.returncode == 0, proc.stderr
        assert stat.S_IMODE(dst.stat().st_mode) == 0o600, argv
    tree = _small_tree(tmp_path)
    (tree / "P1" / "ST1" / "CT_small.dcm").chmod(0o600)
    (tree / "P1" / "ST1" / "MR_small.dcm").chmod(0o640)
    for mode in (["-c", str(pki.cert), "-e", "--secret-file", str(secret)],
                 ["--dumb", "--remove", "10,10"]):
        out = tmp_path / f"out-{len(mode)}"
        proc = anonpipe(*mode, "-r", "--workers", "0", str(tree), str(out), state=state)
        assert proc.returncode == 0, proc.stderr
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*.dcm")}
        umask = os.umask(0)
        os.umask(umask)
        assert modes == {"CT_small.dcm": 0o600, "MR_small.dcm": 0o640 & ~umask}
        # no input is readable by others: neither are the folders made for the outputs
        # (their names mirror the input's, and may name a patient)
        for rel in ("P1", "P1/ST1"):
            assert stat.S_IMODE((out / rel).stat().st_mode) & 0o007 == 0, rel


# --------------------------------------------------------------------------- 6, 7. user mistakes


def test_a_new_secret_is_announced(tmp_path: Path, pki: Pki) -> None:
    fresh = tmp_path / "fresh-state"
    out = tmp_path / "out.dcm"
    proc = anonpipe("-c", str(pki.cert), "-e", str(pydicom_file("rtplan.dcm")), str(out),
                    state=fresh)
    assert proc.returncode == 0
    assert proc.stderr == f"anonpipe: created a new secret in {fresh / 'secret'} (keep it: " \
        "the same secret gives the same replacements)\n"
    again = anonpipe("-c", str(pki.cert), "-e", str(pydicom_file("rtplan.dcm")), str(out),
                     state=fresh)
    assert again.returncode == 0 and again.stderr == ""


def test_swapped_arguments_never_overwrite_an_original(tmp_path: Path, state: Path,
                                                      secret: Path, pki: Pki) -> None:
    original, other = tmp_path / "original.dcm", tmp_path / "other.dcm"
    shutil.copy(pydicom_file("CT_small.dcm"), original)
    shutil.copy(pydicom_file("MR_small.dcm"), other)
    kept = original.read_bytes()
    base = ["-c", str(pki.cert), "-e", "--secret-file", str(secret)]
    refused(anonpipe(*base, str(other), str(original), state=state),
            "not a de-identified file", "--force")
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM")
    refused(anonpipe(*base, str(other), str(notes), state=state), "--force")
    assert original.read_bytes() == kept and notes.read_text() == "not DICOM"
    # our own output is replaced on a rerun (an irreversible one too: (0012,0062) YES);
    # --force replaces anything
    deid = tmp_path / "deid.dcm"
    assert anonpipe(*base, str(original), str(deid), state=state).returncode == 0
    assert anonpipe(*base, str(original), str(deid), state=state).returncode == 0
    plain = ["-e", "--irreversible", "--secret-file", str(secret)]
    irreversible = tmp_path / "irreversible.dcm"
    for _ in range(2):
        proc = anonpipe(*plain, str(original), str(irreversible), state=state)
        assert proc.returncode == 0, proc.stderr
    assert anonpipe(*base, "--force", str(other), str(original), state=state).returncode == 0
    assert original.read_bytes() != kept
