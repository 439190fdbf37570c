"""Output names: the input's folder and file names mirrored, or names made of replacements.

PS3.15 E.1.1 counts file names among the places identifiers hide: exports name folders
``DOE^JOHN_5551234/ACC_A7654321/``.  Mirrored names are therefore checked against the
identifiers pass 1 read from the files (name parts, Patient ID, Other Patient IDs,
Accession Number, birth date in the usual spellings) before anything is written; when an
output path would hold one, the run stops and the user chooses ``--output-names uid``
(``<patient pseudonym>/<new Study UID>/<new Series UID>/<new SOP Instance UID>.dcm``: the
same names on every rerun, so a run resumes) or ``--keep-names`` (mirror anyway).

Why whole tokens: a name part "LI" must stop ``LI_CT/`` and must not stop ``CLINIC/``.  A
path component and every identifier are cut into word tokens (case-folded, so "müller"
matches "MÜLLER"); an identifier is found when its token sequence occurs in a component's.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator

from pipeline.store import Store
from tasks.actions import dummy_value
from tasks.uids import new_uid, pseudonym

PATIENT_ID_VR = "LO"
#: a PN value's components that name the person (prefix and suffix are "DR", "JR"...)
NAME_COMPONENTS = 3
MIN_NAME_PART = 2
#: an ID of digits only is searched from 3 digits: "12" is a series folder more often
MIN_DIGITS = 3
_TOKEN = re.compile(r"[^\W_]+")
_PN_SPLIT = re.compile(r"[\^=]")


class OutputNames(enum.Enum):
    """How outputs of a directory run are named."""

    MIRROR = "mirror"  # the input's relative path (checked for identifiers)
    UID = "uid"  # pseudonym/study/series/instance.dcm


def tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(text.casefold()))


def decode_text(value: str, charset: str | None) -> list[str]:
    """``value`` (the store keeps header bytes as Latin-1 text) as the file meant it.

    Decoded by the file's Specific Character Set (UTF-8, ISO 2022 with escapes, ...);
    the Latin-1 reading stays a candidate (a wrong charset term must not hide a name).
    """
    found = [value]
    raw = value.encode("latin-1", "replace")
    if not charset or (raw.isascii() and b"\x1b" not in raw):  # ISO 2022 is 7-bit
        return found
    import warnings

    from pydicom.charset import convert_encodings, decode_bytes

    terms = [t.strip() for t in charset.split("\\")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown term: pydicom warns, then guesses
            text = decode_bytes(raw, convert_encodings(terms), {0x5E, 0x3D})
    except Exception:  # noqa: BLE001 - an undecodable value keeps its Latin-1 reading
        return found
    return found if text == value else [value, text]


def name_parts(value: str) -> Iterator[str]:
    """The parts of a person name (family, given, middle; each representation)."""
    for group in value.split("="):
        for part in _PN_SPLIT.split(group)[:NAME_COMPONENTS]:
            for word in part.split():
                if len(word.strip(".,'-")) >= MIN_NAME_PART:
                    yield word


def date_spellings(value: str) -> Iterator[str]:
    """A DA value (YYYYMMDD) as people write it in folder names."""
    value = value.strip()[:8]
    if len(value) != 8 or not value.isdigit():
        return
    y, m, d = value[:4], value[4:6], value[6:]
    yield value
    yield d + m + y
    for mm, dd in {(m, d), (m.lstrip("0"), d.lstrip("0"))}:
        yield f"{y}-{mm}-{dd}"
        yield f"{dd}.{mm}.{y}"
        yield f"{mm}-{dd}-{y}"


class PathIdentifiers:
    """Token sequences of the identifiers, by length; ``holds(component)``."""

    __slots__ = ("by_length",)

    def __init__(self) -> None:
        self.by_length: dict[int, set[tuple[str, ...]]] = {}

    def add(self, text: str) -> None:
        seq = tokens(text)
        joined = "".join(seq)
        if len(joined) >= (MIN_DIGITS if joined.isdigit() else MIN_NAME_PART):
            self.by_length.setdefault(len(seq), set()).add(seq)

    def add_row(self, row: dict[str, object]) -> None:
        """The identifiers of one inventory row."""
        charset = row.get("charset")
        charset = charset if isinstance(charset, str) else None
        name = row.get("patient_name")
        if isinstance(name, str):
            for text in decode_text(name, charset):
                for part in name_parts(text):
                    self.add(part)
        for key in ("patient_id", "accession", "other_ids"):
            value = row.get(key)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    for one in item.split("\\"):
                        for text in decode_text(one.strip(), charset):
                            self.add(text)
        birth = row.get("birth_date")
        if isinstance(birth, str):
            for spelling in date_spellings(birth):
                self.add(spelling)

    def holds(self, component: str) -> bool:
        seq = tokens(component)
        for n, known in self.by_length.items():
            for i in range(len(seq) - n + 1):
                if seq[i:i + n] in known:
                    return True
        return False

    def __bool__(self) -> bool:
        return bool(self.by_length)


def paths_holding(rels: Iterable[str], ids: PathIdentifiers) -> Iterator[str]:
    """The relative paths with a component that holds an identifier (each folder and each
    file name checked once: names like IM0001.dcm repeat in every series)."""
    folders: dict[str, bool] = {}
    names: dict[str, bool] = {}
    for rel in rels:
        folder, _, name = rel.rpartition("/")
        bad = folders.get(folder)
        if bad is None:
            bad = any(ids.holds(part) for part in folder.split("/") if part)
            if len(folders) > 100_000:
                folders.clear()
            folders[folder] = bad
        if not bad:
            bad = names.get(name)
            if bad is None:
                bad = names[name] = ids.holds(name)
                if len(names) > 100_000:
                    names.clear()
        if bad:
            yield rel


def uid_name(secret: bytes, root: str, row: dict[str, object], replace_uids: bool,
             duplicate: str | None = None) -> str:
    """``<patient pseudonym>/<Study UID>/<Series UID>/<SOP Instance UID>.dcm``, relative.

    The pseudonym is the one Action D gives the Patient ID; the UIDs are the replacements
    the file gets (the originals with ``--retain-uids``).  ``duplicate`` (the input path)
    tells apart files that share a SOP Instance UID.
    """
    pid = str(row.get("patient_id") or "")
    patient = dummy_value(secret, PATIENT_ID_VR, pid.encode("latin-1", "replace")).decode()

    def uid(key: str) -> str:
        value = row.get(key)
        if not isinstance(value, str) or not value:
            return f"NO{key.upper()}"
        return new_uid(secret, root, value) if replace_uids else value

    name = uid("sop")
    if duplicate is not None:
        name += "_" + pseudonym(secret, "output-name",
                                duplicate.encode("utf-8", "surrogateescape"), 8)
    return f"{patient}/{uid('study')}/{uid('series')}/{name}.dcm"


def mirrored_paths_holding(store: Store, shown: int = 1000) -> tuple[int, list[str]]:
    """How many mirrored output paths would hold an identifier of the inventory (and the
    first ``shown`` of them, for ``-D``)."""
    ids = PathIdentifiers()
    for row in store.distinct_identifiers():
        ids.add_row(row)
    if not ids:
        return 0, []
    count, first = 0, list[str]()
    for rel in paths_holding(store.readable_paths(), ids):
        count += 1
        if len(first) < shown:
            first.append(rel)
    return count, first
