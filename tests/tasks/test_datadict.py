"""PS3.6 without pydicom (tasks.datadict): the copy is pydicom's, answers as pydicom does,
and the runs that only look things up in it no longer import pydicom."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import DicomDictionary, RepeatersDictionary, get_entry, keyword_dict

from tasks import datadict
from tasks.uids import registered
from tests.conftest import REPO, SECRET, Pki, packages_loaded_by, pydicom_file

#: tags in repeating groups, and tags no dictionary knows
ODD_TAGS = (0x60003000, 0x601E3000, 0x60020010, 0x50000005, 0x50FE3000, 0x7F000010,
            0x7FFE0010, 0x00203100, 0x002031FF, 0x00280400, 0x00280411, 0x10101234,
            0x00099999, 0x7FE10010, 0x00080000, 0x60010010, 0xFFFFFFFF)


def test_the_table_is_what_the_generator_makes_from_this_pydicom() -> None:
    """A pydicom with another dictionary fails here until ``make tables`` is run."""
    spec = importlib.util.spec_from_file_location(
        "gen_datadict_table", REPO / "scripts" / "gen_datadict_table.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (REPO / "tasks" / "_datadict_table.py").read_text(encoding="utf-8") == generator.render()
    assert ((REPO / "tasks" / "_keyword_table.py").read_text(encoding="utf-8")
            == generator.render_keywords())


def test_every_entry_answers_as_pydicom_does() -> None:
    for tag in [*DicomDictionary, *ODD_TAGS]:
        try:
            expected: tuple[str, str] | None = get_entry(tag)[:2]
        except KeyError:
            expected = None
        if tag & 0x10000:
            expected = None  # private: pydicom's public dictionary answers none either
        assert datadict.public_entry(tag) == expected, hex(tag)
    for mask, entry in RepeatersDictionary.items():
        assert datadict.repeater(mask) == entry[:2]


def test_every_keyword_names_the_tag_pydicom_gives_it() -> None:
    assert datadict.keywords() == list(keyword_dict)
    for keyword, tag in keyword_dict.items():
        assert datadict.tag_for_keyword(keyword) == tag
    assert datadict.tag_for_keyword("PatientNmae") is None


def test_every_character_set_has_pydicom_s_codec() -> None:
    from pydicom.charset import python_encoding

    for term, codec in python_encoding.items():
        assert datadict.charset_codec(term) == codec
    assert datadict.charset_codec("ISO_IR 999") is None


def test_every_registered_uid_is_named_as_pydicom_names_it() -> None:
    for uid, entry in UID_dictionary.items():
        assert datadict.registered_uid(uid) == entry[:2]
        assert registered(uid) == f"{entry[1]}: {entry[0]}"
    assert registered("1.2.840.10008.999.999") is None
    assert registered("1.2.826.0.1.3680043.2.1125.1") is None


def test_implicit_files_reidentification_and_dumb_edits_never_import_pydicom(
        pki: Pki, tmp_path: Path) -> None:
    """pydicom (with numpy) costs ~0.2 s of CPU per process: an implicit VR file's
    de-identification, its re-identification and a dumb edit (by tags and keywords, of a
    file in ISO_IR 100) do without it."""
    implicit = pydicom_file("MR_small_implicit.dcm")
    latin1 = pydicom_file("CT_small.dcm")  # Specific Character Set ISO_IR 100
    out, back, dumb = tmp_path / "out.dcm", tmp_path / "back.dcm", tmp_path / "dumb.dcm"
    loaded = packages_loaded_by(
        "from pipeline.cli import main\n"
        f"assert main(['-c', {str(pki.cert)!r}, '-e', '--secret-file', {str(_secret(tmp_path))!r},"
        f" '-i', {str(implicit)!r}, '-o', {str(out)!r}]) == 0\n"
        f"assert main(['-k', {str(pki.key)!r}, '-d', '-i', {str(out)!r}, '-o', {str(back)!r}])"
        " == 0\n"
        "assert main(['--dumb', '--remove', '10,10', '--replace', 'PatientID=NEWID', '--empty',"
        f" 'ReferringPhysicianName', '-i', {str(latin1)!r}, '-o', {str(dumb)!r}]) == 0\n")
    assert "pipeline" in loaded
    assert not loaded & {"pydicom", "numpy", "PIL"}
    assert back.read_bytes() == implicit.read_bytes()
    assert dumb.stat().st_size > 0


def _secret(folder: Path) -> Path:
    path = folder / "secret"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path
