"""Every byte of an output is accounted for: the privacy corpus through the command line.

``tests/corpus.py`` puts a unique marker in every place where exports hide identifiers.
After ``anonpipe -e -r --output-names uid`` (the default profile, ``strict``, and every
Option) no marker may be left in the output bytes, the output paths, stdout, stderr or the
run report, except where the profile or option keeps that place on purpose
(:meth:`Marker.kept_by`); ``anonpipe -d`` gives back every input byte for byte; and
``anonpipe-audit`` stays quiet on the outputs and finds each leak class planted in them.
Failures list the surviving markers by class and place.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from pipeline.audit import audit
from pipeline.store import Store
from tasks.actions import date_offset_days, shift_date, shift_datetime
from tasks.dicomio import read_dicom
from tasks.profile import OPTIONS
from tests.conftest import Pki, run_main
from tests.corpus import (
    CODED,
    META,
    PATH,
    PREAMBLE,
    Marker,
    PrivacyCorpus,
    build_privacy_corpus,
    surviving,
)

RUNS = [("basic", ()), ("strict", ())] + [("basic", (option,)) for option in OPTIONS]


@dataclass
class Tree:
    corpus: PrivacyCorpus
    input: Path
    base: Path


@dataclass
class Outcome:
    out: Path
    store: Path
    code: int
    stdout: str
    stderr: str
    reports: list[str]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    """The corpus written under ``in/``; stores, secrets and reports under ``state/``."""
    base = tmp_path_factory.mktemp("privacy")
    corpus = build_privacy_corpus()
    corpus.write(base / "in")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANONPIPE_STATE_DIR", str(base / "state"))
        yield Tree(corpus, base / "in", base)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _deidentify(tree: Tree, pki: Pki, profile: str, options: tuple[str, ...]) -> Outcome:
    name = "-".join((profile, *options))
    out, store = tree.base / f"out-{name}", tree.base / f"store-{name}.sqlite"
    reports = tree.base / "state" / "reports"
    before = set(reports.glob("*.json")) if reports.is_dir() else set()
    flags = [f"--{option.replace('_', '-')}" for option in options]
    proc = run_main("-e", "-r", "-c", str(pki.cert), "--workers", "0",
                "--output-names", "uid", "--profile", profile, *flags, "--store", str(store),
                str(tree.input), str(out))
    texts = [p.read_text() for p in sorted(set(reports.glob("*.json")) - before)]
    return Outcome(out, store, proc.returncode, proc.stdout, proc.stderr, texts)


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def shifted_dates(tree: Tree, outcome: Outcome) -> dict[str, set[bytes]]:
    """Output path -> the date markers of its input shifted by its patient's offset.

    With Retain Longitudinal Modified Dates a shifted date marker may equal another marker
    of the same file (they are consecutive days): such a find is the shift, not a leak.
    """
    secret = bytes.fromhex(Path(f"{outcome.store}.secret").read_text().strip())
    with Store(outcome.store, read_only=True) as store:
        sources = store.output_sources()
    out: dict[str, set[bytes]] = {}
    for rel, source in sources.items():
        data = (tree.input / source).read_bytes()
        days = date_offset_days(secret, read_dicom(data).top_value(0x00100020) or b"")
        dates = set()
        for marker in surviving(data, tree.corpus.markers):
            text = marker.text
            if text.isdigit() and len(text) == 8:
                dates.add(shift_date(text, days) or b"")
            elif text.isdigit() and len(text) == 14:  # 8 of its digits may be a DA marker
                moved = shift_datetime(text, days) or b""
                dates.update([moved] + [moved[i:i + 8] for i in range(len(moved) - 7)])
        out[rel] = dates
    return out


def leaks(tree: Tree, outcome: Outcome, profile: str,
          options: tuple[str, ...]) -> dict[str, list[str]]:
    """Surviving markers not kept on purpose: class -> places (where found)."""
    found: dict[str, set[str]] = defaultdict(set)

    def note(marker: Marker, where: str) -> None:
        if not marker.kept_by(profile, options):
            found[marker.kind].add(f"{marker.place} [in {where}]")

    markers = tree.corpus.markers
    shifted = shifted_dates(tree, outcome) if "retain_long_modified_dates" in options else {}
    for rel, path in _files(outcome.out):
        for marker in surviving(path.read_bytes(), markers):
            if marker.text not in shifted.get(rel, ()):
                note(marker, "output bytes")
        path_bytes, tokens = rel.encode(), set(re.split(rb"[/.]", rel.encode()))
        for text, marker in markers.items():
            # a value copied into a path is one of its components or dot-separated parts;
            # a marker of digits alone is looked for as such, not inside the digits of a
            # UID the names are made of (an 8-digit date is in one of a few thousand
            # 39-digit HMAC UIDs by chance, at random from run to run)
            if (text in tokens) if text.isdigit() else (text in path_bytes):
                note(marker, "output path")
    streams = {"stdout": outcome.stdout, "stderr": outcome.stderr,
               **{f"run report {i}": text for i, text in enumerate(outcome.reports)}}
    for where, text in streams.items():
        data = text.encode()
        for marker_text, marker in markers.items():
            if marker_text in data:
                note(marker, where)
    return {kind: sorted(places) for kind, places in sorted(found.items())}


def _describe(found: dict[str, list[str]]) -> str:
    lines = []
    for kind, places in found.items():
        lines.append(f"{kind}: {len(places)} markers survive, e.g.")
        lines += [f"    {place}" for place in places[:8]]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def default_run(tree: Tree, pki: Pki) -> Outcome:
    return _deidentify(tree, pki, "basic", ())


def test_every_marker_is_findable_in_the_inputs(tree: Tree) -> None:
    seen: set[bytes] = set()
    for rel, path in _files(tree.input):
        seen |= {m.text for m in surviving(path.read_bytes(), tree.corpus.markers)}
        seen |= {t for t, m in tree.corpus.markers.items() if m.kind == PATH and t in rel.encode()}
    assert seen == set(tree.corpus.markers)
    assert len(tree.corpus.markers) > 10_000


@pytest.mark.parametrize("profile,options", RUNS,
                         ids=["-".join((p, *o)) for p, o in RUNS])
def test_no_marker_leaves(tree: Tree, pki: Pki, default_run: Outcome, profile: str,
                          options: tuple[str, ...]) -> None:
    outcome = default_run if (profile, options) == ("basic", ()) else \
        _deidentify(tree, pki, profile, options)
    assert outcome.code == 0, outcome.stderr[-2000:]
    assert len(list(_files(outcome.out))) == len(tree.corpus.files)
    found = leaks(tree, outcome, profile, options)
    assert not found, "\n" + _describe(found)


def test_reidentification_restores_every_file_byte_for_byte(tree: Tree, pki: Pki,
                                                            default_run: Outcome) -> None:
    restored = tree.base / "restored"
    proc = run_main("-d", "-r", "-k", str(pki.key), "--workers", "0",
                "--store", str(tree.base / "store-restore.sqlite"), str(default_run.out),
                str(restored))
    assert proc.returncode == 0, proc.stderr[-2000:]

    def digests(root: Path) -> list[str]:
        return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for _, p in _files(root))

    assert digests(restored) == digests(tree.input)


def _audit(tree: Tree, run: Outcome, out: Path, *extra: str) -> Ran:
    """``anonpipe-audit OUT --store S --input IN --limit 0 [-D]``, in process."""
    stream = io.StringIO()
    code = audit(out, run.store, tree.input, debug="-D" in extra, limit=0, stream=stream)
    return Ran(code, stream.getvalue(), "")


def _finding_lines(stdout: str) -> set[str]:
    """The audit's finding lines (the summary lines name the folder and the time)."""
    return {line for line in stdout.splitlines()
            if not line.startswith("anonpipe-audit:")}


def test_audit_is_quiet_on_the_clean_outputs(tree: Tree, default_run: Outcome) -> None:
    proc = _audit(tree, default_run, default_run.out)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_audit_finds_each_leak_class_planted(tree: Tree, default_run: Outcome) -> None:
    """One copy of the clean output per class, with one leak planted; the audit must fail
    on each (exit 1) and report a leak."""
    markers = tree.corpus.markers
    name = next(m for m in markers.values()
                if m.place.startswith("PatientName (00100010), E.1-1 rows, implicit"))
    source_ae = next(m for m in markers.values() if m.kind == META and "0016" in m.place)
    preamble = next(m for m in markers.values() if m.kind == PREAMBLE)
    unlisted_uid = next(m for m in markers.values() if m.place == "(0008,1167), depth 0")
    local_code = next(m for m in markers.values() if m.kind == CODED and m.tag is None
                      and m.place.endswith("CodeMeaning"))
    baseline = _audit(tree, default_run, default_run.out, "-D").stdout
    # a file whose baseline findings hold none of the planted values (until the engine
    # closes every class, the clean outputs themselves show findings: compared below)
    needles = [m.text.upper() for m in (name, source_ae, preamble, unlisted_uid, local_code)]
    target = min((p for rel, p in _files(default_run.out)
                  if not any(n in line.encode() for line in baseline.splitlines()
                             if line.startswith(f"  {rel}") for n in needles)),
                 key=lambda p: p.stat().st_size)

    def edit(change: Callable[[Dataset], None]) -> Callable[[Path], None]:
        def plant(out: Path) -> None:
            path = out / target.relative_to(default_run.out)
            ds = pydicom.dcmread(path)
            change(ds)
            ds.save_as(path)
        return plant

    def name_in_path(out: Path) -> None:
        folder = next(p for p in sorted(out.iterdir()) if p.is_dir())
        folder.rename(out / f"{folder.name}_{name.text.decode()}")

    def short_name_in_path(out: Path) -> None:
        (out / "LI_X").mkdir()
        shutil.copy(target, out / "LI_X" / "a.dcm")

    def symlinked(out: Path) -> None:
        hidden = tree.base / f"elsewhere-{out.name}"
        hidden.mkdir()
        ds = pydicom.dcmread(target)
        ds.add_new(0x00400400, "LT", f"seen by {name.text.decode()}")
        ds.save_as(hidden / "x.dcm")
        (out / "linked").symlink_to(hidden, target_is_directory=True)
        (hidden / "loop").symlink_to(out, target_is_directory=True)

    def set_meta(ds: Dataset) -> None:
        ds.file_meta.SourceApplicationEntityTitle = source_ae.text.decode()

    def set_preamble(ds: Dataset) -> None:
        ds.preamble = preamble.text.ljust(128, b"\0")

    cases: dict[str, Callable[[Path], None]] = {
        "name": edit(lambda ds: ds.add_new(0x00400400, "LT", name.text.decode())),
        "utf8-name": edit(lambda ds: (setattr(ds, "SpecificCharacterSet", "ISO_IR 192"),
                                      ds.add_new(0x00400400, "LT", "Jörg山田"))),
        "lower-case-latin1-name": edit(lambda ds: ds.add_new(0x00400400, "LT",
                                                             "dr. müller")),
        "meta": edit(set_meta),
        "preamble": edit(set_preamble),
        "unlisted-uid": edit(lambda ds: ds.add_new(0x00081167, "UI",
                                                   unlisted_uid.text.decode())),
        "local-code": edit(lambda ds: (setattr(ds, "SpecificCharacterSet", "ISO_IR 100"),
                                       ds.add_new(0x00400400, "LT",
                                                  f"{local_code.text.decode()} Straße"))),
        "path": name_in_path,
        "short-name-part-in-path": short_name_in_path,
        "symlinked-folder": symlinked,
    }
    missed = []
    for label, change in cases.items():
        out = tree.base / f"planted-{label}"
        shutil.copytree(default_run.out, out, symlinks=True)
        change(out)
        proc = _audit(tree, default_run, out, "-D")
        new = _finding_lines(proc.stdout) - _finding_lines(baseline)
        if "path" in label:
            new = {line for line in new if "output path" in line}
        if proc.returncode != 1 or not new:
            missed.append(f"{label}: exit {proc.returncode}, nothing new found: "
                          f"{proc.stdout[-600:]}")
    assert not missed, "\n".join(missed)
