"""Fuzz targets over the per-file de-identify, re-identify and dumb mode, and pass 1's
header read (hypothesis-driven mutations).

Each target mutates real files (pydicom's test data, and their de-identified outputs) with
byte flips, truncations, insertions, deletions and header-aware corruptions (length fields
set to 0, 1, 0xFFFFFFF0, undefined...; VRs and tags swapped for item, delimiter and
structural tags), and asserts:

* only :class:`AnonpipeError` subclasses escape;
* whatever succeeds re-parses, and a reversible de-identification restores the mutated
  input byte for byte.

The normal test run is bounded (derandomized, a fixed number of examples, ~20 s for all
targets) so CI never flakes; ``ANONPIPE_FUZZ_SECONDS=N`` (``make fuzz``) spreads N seconds
over the targets with fresh random seeds and hypothesis' example database, so a crash found
once is replayed first next time.  Every crash found becomes a regression test with its
minimal input in tests/tasks/test_hostile_inputs.py.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tasks.crypto import EnvelopeEncryptor
from tasks.deidentify import DeidentifySettings, deidentify_bytes
from tasks.dicomio import read_dicom
from tasks.errors import AnonpipeError
from tasks.profile import ProfileSpec, load_profile
from tasks.reidentify import ReidentifySettings, reidentify_bytes
from tests.conftest import REPO, SECRET
from tests.fuzz.conftest import FuzzStats
from tests.fuzz.hostile import (
    SEEDS,
    Header,
    headers,
    payload_headers,
    payload_of,
    seed,
    with_payload,
)

FUZZ_SECONDS = float(os.environ.get("ANONPIPE_FUZZ_SECONDS") or 0)
#: examples per target in the bounded run (tuned so all targets take ~20 s together)
EXAMPLES = int(os.environ.get("ANONPIPE_FUZZ_EXAMPLES") or 1500)
TARGETS = 8
#: inputs of failing examples (build/ is not tracked)
FAILURES = REPO / "build" / "fuzz-failures"

MAGIC_LENGTHS = (0, 1, 2, 7, 8, 0xFFFE, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF)
VRS = (b"SQ", b"UN", b"OB", b"OW", b"UT", b"UI", b"PN", b"XX", b"\0\0", b"\xfe\xff")
TAGS = (0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD, 0x00000000, 0x7FE00010, 0x00080018, 0x04000500,
        0x04000550, 0x00020010, 0x00080005, 0x00091010)
POSITION = st.integers(0, 2**32 - 1)  # taken modulo the size: shrinks towards the start

MUTATION = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), POSITION, st.integers(1, 64)),
    st.tuples(st.just("length"), POSITION, st.sampled_from(MAGIC_LENGTHS)),
    st.tuples(st.just("vr"), POSITION, st.sampled_from(VRS)),
    st.tuples(st.just("tag"), POSITION, st.sampled_from(TAGS)),
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def mutate(data: bytes, found: list[Header], mutations: list[tuple]) -> bytes:  # type: ignore[type-arg]
    """``data`` with ``mutations`` applied in order (header ops fall back to byte flips)."""
    buf = bytearray(data)
    for kind, where, *args in mutations:
        if kind in ("length", "vr", "tag") and found:
            header = found[where % len(found)]
            if max(header.start + 8, header.length_at + header.length_size) > len(buf):
                continue  # cut away by an earlier truncate or delete
            if kind == "length":
                fmt = header.endian + ("H" if header.length_size == 2 else "I")
                value = args[0] & (0xFFFF if header.length_size == 2 else 0xFFFFFFFF)
                struct.pack_into(fmt, buf, header.length_at, value)
            elif kind == "vr":
                buf[header.start + 4:header.start + 6] = args[0]
            else:
                struct.pack_into(header.endian + "HH", buf, header.start, args[0] >> 16,
                                 args[0] & 0xFFFF)
            continue
        if not buf:
            break
        at = where % (len(buf) + (1 if kind in ("truncate", "insert") else 0))
        if kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = args[0]
        elif kind == "delete":
            del buf[at:at + args[0]]
        else:  # flip, or a header op on a file without headers (deflated)
            buf[at % len(buf)] ^= 1 << (args[0] if kind == "flip" else 0)
    return bytes(buf)


# --------------------------------------------------------------------------- running


def run_target(check: Callable[..., None], strategy: st.SearchStrategy, stats: FuzzStats,  # type: ignore[type-arg]
               name: str, examples: int = EXAMPLES) -> None:
    """Run ``check`` over ``strategy``: a fixed derandomized budget, or a time budget."""
    count = [0]

    def counted(case: object) -> None:
        count[0] += 1
        check(case)

    started = time.perf_counter()
    if FUZZ_SECONDS <= 0:
        bounded = settings(max_examples=examples, deadline=None, derandomize=True,
                           database=None, suppress_health_check=list(HealthCheck),
                           phases=[Phase.explicit, Phase.generate, Phase.shrink])
        bounded(given(strategy)(counted))()
    else:
        until = started + FUZZ_SECONDS / TARGETS
        long_run = settings(max_examples=2000, deadline=None, derandomize=False,
                            suppress_health_check=list(HealthCheck))
        runner = long_run(given(strategy)(counted))
        while time.perf_counter() < until:
            runner()
    stats.record(name, count[0], time.perf_counter() - started)


def expect_clean(operation: Callable[[bytes], bytes], data: bytes,
                 key_pem: bytes | None = None) -> bytes | None:
    """``operation(data)``: None for an AnonpipeError; any other exception fails the test,
    naming where the input (and ``key_pem``, the session's random key it needs) is kept."""
    try:
        out = operation(data)
        read_dicom(out)  # whatever succeeds must re-parse
    except AnonpipeError:
        return None
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}; input kept as "
                             f"{_keep_failing_input(data, key_pem)}") from exc
    return out


def expect_round_trip(out: bytes, data: bytes, reid: ReidentifySettings) -> None:
    """``-d`` of ``out`` must give ``data`` back byte for byte; otherwise the test fails
    naming where the input is kept, beside the de-identified file and the key that opens
    it."""
    try:
        back: bytes | None = reidentify_bytes(out, reid)
        problem = ""
    except Exception as exc:  # noqa: BLE001 - our own output must re-identify
        back, problem = None, f"{type(exc).__name__}: {exc}"
    if back == data:
        return
    if back is not None:
        first = next((i for i, (a, b) in enumerate(zip(back, data)) if a != b),
                     min(len(back), len(data)))
        problem = f"-d did not restore the input byte for byte (first difference at byte {first})"
    kept = _keep_failing_input(data, reid.key_pem)
    kept.with_suffix(".deidentified.dcm").write_bytes(out)
    raise AssertionError(f"{problem}; input kept as {kept}")


def _keep_failing_input(data: bytes, key_pem: bytes | None) -> Path:
    """Why: the envelopes hold session-random keys, so a failing example cannot be rebuilt
    from hypothesis' seed alone; the bytes (and key) are what replays it."""
    FAILURES.mkdir(parents=True, exist_ok=True)
    path = FAILURES / f"{hashlib.sha256(data).hexdigest()[:16]}.dcm"
    path.write_bytes(data)
    if key_pem is not None:
        path.with_suffix(".key.pem").write_bytes(key_pem)
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reversible(encryptor: EnvelopeEncryptor) -> DeidentifySettings:
    return DeidentifySettings(secret=SECRET, encryptor=encryptor, allow_burned_in=True)


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[bytes, list[Header]]]:
    return {name: (seed(name), headers(seed(name))) for name in SEEDS}


@pytest.fixture(scope="module")
def deidentified(corpus: dict[str, tuple[bytes, list[Header]]],
                 reversible: DeidentifySettings) -> dict[str, tuple[bytes, list[Header]]]:
    out = {}
    for name, (data, _) in corpus.items():
        result = deidentify_bytes(data, reversible)
        out[name] = (result, headers(result))
    return out


def cases(files: dict[str, tuple[bytes, list[Header]]]) -> st.SearchStrategy:  # type: ignore[type-arg]
    return st.tuples(st.sampled_from(sorted(files)), MUTATIONS)


# --------------------------------------------------------------------------- targets


def test_fuzz_deidentify_round_trip(corpus: dict[str, tuple[bytes, list[Header]]],
                                    reversible: DeidentifySettings, reid: ReidentifySettings,
                                    fuzz_stats: FuzzStats) -> None:
    """-e on mutated files, under the basic and the gdcmanon profile (which keeps private
    blocks and so puts other originals in the payload); what de-identifies must
    re-identify to the same bytes."""
    profiles = {"basic": reversible,
                "gdcmanon": reversible._replace(profile="gdcmanon")}

    def check(case: tuple[str, str, list]) -> None:  # type: ignore[type-arg]
        profile, name, mutations = case
        data = mutate(*corpus[name], mutations)
        out = expect_clean(lambda d: deidentify_bytes(d, profiles[profile]), data)
        if out is not None:
            expect_round_trip(out, data, reid)

    strategy = st.tuples(st.sampled_from(sorted(profiles)), st.sampled_from(sorted(corpus)),
                         MUTATIONS)
    run_target(check, strategy, fuzz_stats, "deidentify (reversible, both profiles)")


def _pixels_emptied() -> ProfileSpec:
    spec = load_profile("basic")
    actions = tuple(sorted({**dict(spec.actions), 0x7FE00010: "Z"}.items()))
    return spec._replace(name="pixels-emptied", actions=actions)


IRREVERSIBLE = {
    "gdcmanon": DeidentifySettings(secret=SECRET, profile="gdcmanon", allow_burned_in=True),
    "pixels-emptied": DeidentifySettings(  # a site profile acting on Pixel Data itself
        secret=SECRET, allow_burned_in=True, profile=_pixels_emptied()),
    "basic+options": DeidentifySettings(
        secret=SECRET, allow_burned_in=True,
        options=("clean_descriptors", "clean_structured_content", "clean_graphics",
                 "retain_long_modified_dates", "retain_safe_private",
                 "retain_patient_characteristics")),
}


def test_fuzz_deidentify_irreversible_profiles(corpus: dict[str, tuple[bytes, list[Header]]],
                                               fuzz_stats: FuzzStats) -> None:
    """-e --irreversible under the gdcmanon profile and basic with every cleaning option."""

    def check(case: tuple[str, str, list]) -> None:  # type: ignore[type-arg]
        profile, name, mutations = case
        data = mutate(*corpus[name], mutations)
        expect_clean(lambda d: deidentify_bytes(d, IRREVERSIBLE[profile]), data)

    strategy = st.tuples(st.sampled_from(sorted(IRREVERSIBLE)), st.sampled_from(sorted(corpus)),
                         MUTATIONS)
    run_target(check, strategy, fuzz_stats, "deidentify (irreversible profiles)")


def test_fuzz_reidentify_mutated_file(deidentified: dict[str, tuple[bytes, list[Header]]],
                                      reid: ReidentifySettings, fuzz_stats: FuzzStats) -> None:
    """-d on mutated de-identified files (their CMS included)."""

    def check(case: tuple[str, list]) -> None:  # type: ignore[type-arg]
        name, mutations = case
        expect_clean(lambda d: reidentify_bytes(d, reid), mutate(*deidentified[name], mutations),
                     reid.key_pem)

    run_target(check, cases(deidentified), fuzz_stats, "reidentify (mutated file)")


def test_fuzz_reidentify_tampered_payload(deidentified: dict[str, tuple[bytes, list[Header]]],
                                          encryptor: EnvelopeEncryptor,
                                          reid: ReidentifySettings,
                                          fuzz_stats: FuzzStats) -> None:
    """-d where the decrypted payload itself is mutated (re-encrypted for the same key): what
    a damaged CBC block or a forged payload hands the restorer."""
    key = reid.private_key()
    payloads = {}
    for name, (data, _) in deidentified.items():
        plaintext = payload_of(data, key)
        payloads[name] = (plaintext, payload_headers(plaintext))

    def check(case: tuple[str, list]) -> None:  # type: ignore[type-arg]
        name, mutations = case
        tampered = with_payload(deidentified[name][0], mutate(*payloads[name], mutations),
                                encryptor)
        expect_clean(lambda d: reidentify_bytes(d, reid), tampered, reid.key_pem)

    run_target(check, cases(payloads), fuzz_stats, "reidentify (tampered payload)")


def test_fuzz_split_matches_whole(corpus: dict[str, tuple[bytes, list[Header]]],
                                  deidentified: dict[str, tuple[bytes, list[Header]]],
                                  reid: ReidentifySettings, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  fuzz_stats: FuzzStats) -> None:
    """Mutated files through the operations the pipeline runs, with the pixel data left in
    the file (tasks.pixeltail) and read whole: the same bytes or the same error, -e
    (irreversible: deterministic) on the inputs, -d on their de-identified outputs, and
    dumb mode on the inputs (edits before and after the pixel data)."""
    import tasks.deidentify
    import tasks.dumb
    import tasks.reidentify
    from tasks.deidentify import Deidentify
    from tasks.dumb import DumbEdit, DumbSettings, parse_dumb_ops
    from tasks.reidentify import Reidentify

    dumb = DumbSettings(parse_dumb_ops(["10,20"], ["10,30"], ["8,90", "fffc,fffc"],
                                       ["10,10=Anon", "9,1,ANONPIPE FUZZ=x"]), force=True)
    operations = {**{f"-e {name}": (Deidentify(settings), corpus, tasks.deidentify)
                     for name, settings in IRREVERSIBLE.items()},
                  "-d": (Reidentify(reid), deidentified, tasks.reidentify),
                  "dumb": (DumbEdit(dumb, warn=_ignore), corpus, tasks.dumb)}
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"

    def outcome(mode: str, split: bool) -> bytes | str:
        operation, _, module = operations[mode]
        monkeypatch.setattr(module, "SPLIT_FROM", 0 if split else 1 << 62)
        try:
            operation(src, dst)
        except AnonpipeError as exc:
            return f"{type(exc).__name__}: {exc}"
        return dst.read_bytes()

    def check(case: tuple[str, str, list]) -> None:  # type: ignore[type-arg]
        mode, name, mutations = case
        data = mutate(*operations[mode][1][name], mutations)
        src.write_bytes(data)
        whole = outcome(mode, False)
        try:
            split = outcome(mode, True)
        except Exception as exc:
            raise AssertionError(f"{mode} split: {type(exc).__name__}: {exc}; input kept as "
                                 f"{_keep_failing_input(data, reid.key_pem)}") from exc
        if split != whole:
            raise AssertionError(f"{mode}: split and whole differ; input kept as "
                                 f"{_keep_failing_input(data, reid.key_pem)}")

    strategy = st.tuples(st.sampled_from(sorted(operations)), st.sampled_from(sorted(corpus)),
                         MUTATIONS)
    run_target(check, strategy, fuzz_stats, "split pixel data vs whole (-e, -d, dumb)",
               examples=EXAMPLES // 3)


def _ignore(note: str) -> None:
    """Dumb mode's warnings (Type 1 edits) are not what the split target compares."""


def test_fuzz_header_read_matches_one_walk(corpus: dict[str, tuple[bytes, list[Header]]],
                                          tmp_path: Path, fuzz_stats: FuzzStats) -> None:
    """Pass 1's header read (``read_header``: a first chunk, then further reads, past a long
    element at once) against one walk of the whole file up to the pixel data: the same
    elements, or the same error, whatever the first chunk's size."""
    from tasks.dicomio import read_header

    path = tmp_path / "in.dcm"

    def outcome(read: Callable[[], object]) -> object:
        try:
            df = read()
        except AnonpipeError as exc:
            return f"{type(exc).__name__}: {exc}"
        return [(el.tag, el.start, el.end) for el in df.elements]  # type: ignore[attr-defined]

    def check(case: tuple[str, list, int]) -> None:  # type: ignore[type-arg]
        name, mutations, first_chunk = case
        data = mutate(*corpus[name], mutations)
        path.write_bytes(data)
        whole = outcome(lambda: read_dicom(data, stop_at_pixels=True))
        try:
            chunked = outcome(lambda: read_header(path, first_chunk))
        except Exception as exc:
            raise AssertionError(f"read_header: {type(exc).__name__}: {exc}; input kept as "
                                 f"{_keep_failing_input(data, None)}") from exc
        if data and chunked != whole:
            raise AssertionError(f"read_header ({first_chunk}) and one walk differ; input "
                                 f"kept as {_keep_failing_input(data, None)}")

    strategy = st.tuples(st.sampled_from(sorted(corpus)), MUTATIONS,
                         st.sampled_from((16, 200, 1024, 4096, 16384)))
    run_target(check, strategy, fuzz_stats, "header read in chunks vs one walk")


def test_fuzz_walkers_agree(corpus: dict[str, tuple[bytes, list[Header]]],
                            fuzz_stats: FuzzStats) -> None:
    """The compiled element walker and the Python one: the same trees on damaged files, or
    both refuse (the compiled one then hands over to the Python one for the error); from
    an offset too (a split file's tail)."""
    from tests.walkers import compare, compare_from

    def check(case: tuple[str, list]) -> None:  # type: ignore[type-arg]
        data = mutate(*corpus[case[0]], case[1])
        try:
            compare(data)
            compare_from(data)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; input kept as {_keep_failing_input(data, None)}") \
                from exc

    run_target(check, cases(corpus), fuzz_stats, "compiled vs Python walker")


def test_fuzz_header_loops_agree(corpus: dict[str, tuple[bytes, list[Header]]],
                                 fuzz_stats: FuzzStats) -> None:
    """Pass 1's compiled header loop and the Python one: the same row fields and UID sets
    on damaged files, or the compiled one hands over."""
    from tests.inventory_loops import compare

    def check(case: tuple[str, list]) -> None:  # type: ignore[type-arg]
        data = mutate(*corpus[case[0]], case[1])
        try:
            compare(data)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; input kept as {_keep_failing_input(data, None)}") \
                from exc

    run_target(check, cases(corpus), fuzz_stats, "compiled vs Python pass-1 loop")


# A grammar target: data sets built from elements, sequences and items of random shape, so
# nesting, delimiters and lengths combine in ways byte mutations of six files rarely reach.

_TAG = st.sampled_from((0x00080018, 0x00081140, 0x00081155, 0x00091010, 0x00100010,
                        0x00100020, 0x00101002, 0x0040A730, 0x7FE00010, 0x00290010,
                        0x00291010, 0xFFFEE000, 0xFFFEE0DD))
_LEAF = st.tuples(_TAG, st.sampled_from((b"PN", b"UI", b"LO", b"OB", b"UN", b"SQ")),
                  st.binary(max_size=12), st.sampled_from((None, None, None, 0xFFFFFFFF, 3)))


def _encode(node: object) -> bytes:
    """A node (leaf tuple, or list of items each a list of nodes) as Explicit VR LE bytes."""
    if len(node) == 4:  # type: ignore[arg-type]
        tag, vr, value, length = node  # type: ignore[misc]
        if len(value) % 2:
            value += b"\0"
        n = len(value) if length is None else length
        if vr in (b"OB", b"UN", b"SQ"):
            return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, n) + value
        return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, n & 0xFFFF) + value
    tag, undefined, items = node  # type: ignore[misc]
    body = b""
    for item in items:
        content = b"".join(_encode(child) for child in sorted(item, key=_sort_key))
        if undefined:
            body += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + content + struct.pack(
                "<HHI", 0xFFFE, 0xE00D, 0)
        else:
            body += struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content
    if undefined:
        return (struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"SQ", 0, 0xFFFFFFFF) + body
                + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"SQ", 0, len(body)) + body


def _sort_key(node: object) -> int:
    return node[0]  # type: ignore[index,no-any-return]


_NODE = st.recursive(
    _LEAF,
    lambda children: st.tuples(_TAG, st.booleans(),
                               st.lists(st.lists(children, max_size=4), max_size=3)),
    max_leaves=24,
)


def test_fuzz_deidentify_generated_datasets(encryptor: EnvelopeEncryptor,
                                            reid: ReidentifySettings,
                                            fuzz_stats: FuzzStats) -> None:
    """-e on generated data sets; de-identified ones must round trip (and the compiled
    walker and edit loops agree with the Python ones on each)."""
    from tests.fuzz.hostile import dataset, file_meta
    from tests.loops import compare as compare_loops
    from tests.walkers import compare

    settings_ = DeidentifySettings(secret=SECRET, encryptor=encryptor, allow_burned_in=True,
                                   profile="gdcmanon")

    def check(nodes: list) -> None:  # type: ignore[type-arg]
        unique = {_sort_key(n): n for n in nodes if _sort_key(n) > 0x00080018}
        body = b"".join(_encode(unique[tag]) for tag in sorted(unique))
        data = file_meta() + dataset(body)
        compare(data)  # the compiled walker agrees with the Python one here too
        compare_loops(data, settings_)  # and the compiled edit loops with the Python ones
        out = expect_clean(lambda d: deidentify_bytes(d, settings_), data)
        if out is not None:
            expect_round_trip(out, data, reid)

    # generating trees costs hypothesis ~10 ms each: a quarter of the examples
    run_target(check, st.lists(_NODE, max_size=6), fuzz_stats, "deidentify (generated)",
               EXAMPLES // 4)


def test_a_crash_keeps_its_input_and_key() -> None:
    """A non-AnonpipeError fails the example and names the kept bytes (and key) that replay it."""
    data, key = b"not a crash we expect " + os.urandom(8), b"-----BEGIN PRIVATE KEY-----\n"

    def crash(_: bytes) -> bytes:
        raise ValueError("boom")

    with pytest.raises(AssertionError, match="ValueError: boom; input kept as ") as failed:
        expect_clean(crash, data, key)
    kept = Path(str(failed.value).rsplit(" ", 1)[1])
    try:
        assert kept.parent == FAILURES and kept.read_bytes() == data
        assert kept.with_suffix(".key.pem").read_bytes() == key
    finally:
        kept.unlink()
        kept.with_suffix(".key.pem").unlink()


def test_a_round_trip_mismatch_keeps_its_input(reversible: DeidentifySettings,
                                               reid: ReidentifySettings) -> None:
    """A file -d does not give back names the kept input, de-identified file and key."""
    data = seed("CT_small.dcm")
    out = deidentify_bytes(data, reversible)
    expect_round_trip(out, data, reid)  # the real round trip passes
    other = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
    with pytest.raises(AssertionError, match=r"first difference at byte \d+\); input kept as ") \
            as failed:
        expect_round_trip(out, other, reid)
    kept = Path(str(failed.value).rsplit(" ", 1)[1])
    try:
        assert kept.parent == FAILURES and kept.read_bytes() == other
        assert kept.with_suffix(".deidentified.dcm").read_bytes() == out
        assert kept.with_suffix(".key.pem").read_bytes() == reid.key_pem
    finally:
        for path in (kept, kept.with_suffix(".deidentified.dcm"), kept.with_suffix(".key.pem")):
            path.unlink()


def test_a_header_op_after_a_truncation_is_skipped() -> None:
    """A long-form header whose 4-byte length a truncation cut off is left alone (the
    harness raised struct.error on it after 19 minutes of fuzzing)."""
    long_form = Header(start=0, length_at=8, length_size=4, endian="<")
    data = bytes(range(20))
    assert mutate(data, [long_form], [("truncate", 8), ("length", 0, 0)]) == data[:8]
    assert mutate(data, [long_form], [("length", 0, 0)]) == data[:8] + bytes(4) + data[12:]
