"""The compiled edit loops (tasks/_editloops.c) give the Python loops' edit plans and bytes,
on every file of pydicom's test data and of the privacy corpus, with every profile and
every PS3.15 Option;
``ANONPIPE_PURE_PYTHON=1`` turns them off.  The fuzz target on generated data sets
compares them too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tasks import deidentify, edit
from tasks.deidentify import DeidentifySettings, _Deidentifier
from tasks.dicomio import Element, read_dicom
from tasks.edit import EditPlan
from tasks.profile import OPTIONS, Action, kept_decision
from tests.conftest import PYDICOM_FILES, SECRET
from tests.corpus import build_privacy_corpus
from tests.loops import compare, python_loops

SETTINGS = (
    [DeidentifySettings(secret=SECRET, profile=name, allow_burned_in=True)
     for name in ("basic", "gdcmanon", "strict")]
    + [DeidentifySettings(secret=SECRET, options=(option,), allow_burned_in=True)
       for option in OPTIONS]
    + [DeidentifySettings(secret=SECRET, options=OPTIONS, allow_burned_in=True)]
)


@pytest.fixture(scope="module")
def test_files() -> list[bytes]:
    files = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())
    assert len(files) > 100
    corpus = build_privacy_corpus().files
    return [path.read_bytes() for path in files] + [corpus[name] for name in sorted(corpus)]


@pytest.mark.parametrize("settings", SETTINGS,
                         ids=lambda s: "+".join(s.options) or str(s.profile))
def test_both_loops_agree_on_test_files(test_files: list[bytes],
                                                settings: DeidentifySettings) -> None:
    walked = sum(compare(data, settings) for data in test_files)
    assert walked > 100  # most files were walked, not refused


def test_pure_python_switch() -> None:
    probe = ("import tasks.edit as e, tasks.deidentify as d; "
             "print(e.LOOPS is None, d._SORT is None)")
    for value, expected in (("1", "True True"), ("", "False False"), ("0", "False False")):
        env = {**os.environ, "ANONPIPE_PURE_PYTHON": value}
        out = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == expected, value


# the sorting of one data set, element by element ------------------------------------------

PN = 0x00100010
MODALITY = 0x00080060


def _element(tag: int, vr: str, start: int, end: int, items: list | None = None) -> Element:  # type: ignore[type-arg]
    return Element(tag, vr, start, start + 8, end - start - 8, end, items)


def _sort_in(elements: list[Element], cached: dict[int, object], key_base: int
             ) -> tuple[list[Element], list[Element] | None]:
    assert deidentify._SORT is not None
    return deidentify._SORT(elements, cached, key_base, True, {}, False, None, b"", {}, {})


def _sort(elements: list[Element], cached: dict[int, object], *, private: bool = True,
          kinds: dict[str, str] | None = None, top: bool = True,
          memo: dict[bytes, bytes | None] | None = None, buf: bytes = b"\0" * 64,
          ) -> tuple[list[Element], list[Element] | None, dict[int, Element], dict[int, bytes]]:
    assert deidentify._SORT is not None
    payload: dict[int, Element] = {}
    replace: dict[int, bytes] = {}
    visit, privates = deidentify._SORT(elements, cached, 0, private, kinds or {}, top, memo,
                                       buf, payload, replace)
    return visit, privates, payload, replace


def test_sort_settles_kept_and_removed_and_hands_back_the_rest() -> None:
    removed = deidentify.Decision(Action.X, deidentify.UID_RULE, None, "", Action.X)
    dummy = deidentify.Decision(Action.D, deidentify.UID_RULE, None, "", Action.D)
    kept = kept_decision("test")
    sequence = _element(0x00081140, "SQ", 40, 56, [object()])  # type: ignore[list-item]
    elements = [_element(MODALITY, "CS", 0, 10), _element(PN, "PN", 10, 20),
                _element(0x00100020, "LO", 20, 30), sequence,
                _element(0x00190010, "LO", 56, 64), _element(0x00200010, "SH", 30, 40)]
    cached = {MODALITY: None, PN: removed, 0x00100020: dummy, 0x00081140: kept}
    visit, privates, payload, replace = _sort(elements, cached)
    # kept: nothing to do; removed at the top: payload and replace; a D: Python applies it;
    # kept with items: Python walks them; private: for _private; not cached: Python decides
    assert [el.tag for el in visit] == [0x00100020, 0x00081140, 0x00200010]
    assert privates is not None and [el.tag for el in privates] == [0x00190010]
    assert payload == {PN: elements[1]} and replace == {10: b""}
    # inside a sequence a removal is recorded with its path, in Python
    visit, _, payload, replace = _sort(elements[:2], cached, top=False)
    assert [el.tag for el in visit] == [PN] and not payload and not replace
    # a decision inside a sequence is cached under the sequence's tag << 32, any tag
    parent = 0xFFFA0010 << 32
    visit, _ = _sort_in(elements[:1], {parent | MODALITY: None}, parent)
    assert visit == []
    # private elements stay in the loop when the profile has no private rule
    visit, privates, _, _ = _sort(elements[4:5], cached, private=False)
    assert privates is None and [el.tag for el in visit] == [0x00190010]


def test_sort_takes_unlisted_kinds_and_memo_hits_only() -> None:
    dummy = deidentify.Decision(Action.D, deidentify.UID_RULE, None, "", Action.D)
    buf = bytes(range(40))
    text, code = _element(0x00321000, "LT", 0, 10), _element(0x00321001, "CS", 10, 20)
    visit, _, _, _ = _sort([text, code], {0x00321000: None, 0x00321001: None},
                           kinds={"LT": "text"}, buf=buf)
    assert visit == [text]  # a VR with a rule past the table: Python applies it
    hit, miss, gone = (_element(0x00100020, "LO", 0, 10), _element(0x00100030, "DA", 10, 20),
                       _element(0x00100040, "CS", 20, 30))
    memo: dict[bytes, bytes | None] = {buf[0:10]: b"new", buf[20:30]: None}
    cached = {0x00100020: dummy, 0x00100030: dummy, 0x00100040: dummy}
    visit, _, payload, replace = _sort([hit, miss, gone], cached, memo=memo, buf=buf)
    assert visit == [miss]
    assert payload == {0x00100020: hit} and replace == {0: b"new"}  # None: unchanged


def test_render_leaves_data_sets_with_group_lengths_to_python() -> None:
    group_length = _element(0x00100000, "UL", 0, 12)
    assert edit.LOOPS is not None
    assert edit.LOOPS.render(b"\0" * 12, [group_length], {}, set(), [],
                             edit._render_element, EditPlan(), None) is None


def test_a_trace_walks_in_python(test_files: list[bytes]) -> None:
    """--explain records every element's decision: the compiled loop is not used."""
    settings = SETTINGS[0]
    profile = settings.compiled_profile()
    calls = 0
    sort = deidentify._SORT

    def counting(*args: object) -> object:
        nonlocal calls
        calls += 1
        return sort(*args)  # type: ignore[misc]

    df = read_dicom(test_files[0])
    deidentify._SORT = counting
    try:
        trace: list[tuple[object, ...]] = []
        _Deidentifier(df, profile, settings, trace).walk(df.elements, df.enc, [])
        assert calls == 0 and len(trace) >= len(df.elements)
        _Deidentifier(df, profile, settings).walk(df.elements, df.enc, [])
        assert calls >= 1
    finally:
        deidentify._SORT = sort
    with python_loops():
        assert deidentify._SORT is None
