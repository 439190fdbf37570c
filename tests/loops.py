"""The compiled edit loops (tasks/_editloops.c) against the Python ones: the same edit plan,
payload and rendered bytes for one file, or the same error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tasks import deidentify, edit
from tasks.deidentify import DeidentifySettings
from tasks.dicomio import read_dicom
from tasks.errors import AnonpipeError


@contextmanager
def python_loops() -> Iterator[None]:
    """Run the Python loops of the walk and the render inside the block."""
    sort, loops = deidentify._SORT, edit.LOOPS
    deidentify._SORT, edit.LOOPS = None, None
    try:
        yield
    finally:
        deidentify._SORT, edit.LOOPS = sort, loops


def outcome(data: bytes, settings: DeidentifySettings) -> tuple[object, ...]:
    """Everything the walk and the render make of ``data``: the plan's replacements and
    dirty offsets, the payload's tags, the rendered data set; or the error."""
    profile = settings.compiled_profile()
    try:
        df = read_dicom(data, private_runs=deidentify._private_runs(profile, None))
        deidentify.check_deidentifiable(df)
        work = deidentify._Deidentifier(df, profile, settings)
        work.walk(df.elements, df.enc, [])
        rendered = b"".join(edit.render_parts(df.body, df.elements, work.plan, df.enc))
    except AnonpipeError as exc:
        return (type(exc).__name__, str(exc))
    return (dict(work.plan.replace), set(work.plan.dirty), sorted(work.payload), rendered)


def compare(data: bytes, settings: DeidentifySettings) -> bool:
    """Walk and render ``data`` with the Python loops, then with the compiled ones, with an
    empty and with a filled memo of top-level results; raise AssertionError where they
    differ.  Returns whether the file was walked (not refused)."""
    assert deidentify._SORT is not None and edit.LOOPS is not None, (
        "the compiled loops are not built (make install)")
    deidentify._TOP_MEMOS.clear()
    compiled_cold = outcome(data, settings)
    deidentify._TOP_MEMOS.clear()
    with python_loops():
        expected = outcome(data, settings)
    compiled_warm = outcome(data, settings)  # memo hits settled by the compiled loop
    assert compiled_cold == expected, "compiled loops (empty memo) differ from Python's"
    assert compiled_warm == expected, "compiled loops (filled memo) differ from Python's"
    return len(expected) == 4
