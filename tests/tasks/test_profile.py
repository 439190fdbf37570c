"""Profiles as data: the generated tables, the YAML loader and the code resolution."""

from __future__ import annotations

import collections
import importlib.util
import json
from pathlib import Path

import pytest

from tasks import _profile_table as table
from tasks.errors import ProfileError
from tasks.iod_types import attribute_type, iod_for_sop_class
from tasks.profile import (
    CODES,
    OPTIONS,
    PROFILE_DIR,
    Action,
    get_profile,
    load_profile,
    resolve_code,
)
from tasks.yamlcache import safe_yaml
from tests.conftest import REPO

STANDARD = REPO / "scripts" / "standard"

#: the 48 tags gdcmanon 3.0.21 hard-codes
GDCMANON_TAGS = {
    0x00080014, 0x00080018, 0x00080050, 0x00080080, 0x00080081, 0x00080090, 0x00080092,
    0x00080094, 0x00081010, 0x00081030, 0x0008103E, 0x00081040, 0x00081048, 0x00081050,
    0x00081060, 0x00081070, 0x00081080, 0x00081155, 0x00082111, 0x00100010, 0x00100020,
    0x00100030, 0x00100032, 0x00100040, 0x00101000, 0x00101001, 0x00101010, 0x00101020,
    0x00101030, 0x00101090, 0x00102160, 0x00102180, 0x001021B0, 0x00104000, 0x00181000,
    0x00181030, 0x0020000D, 0x0020000E, 0x00200010, 0x00200052, 0x00200200, 0x00204000,
    0x00400275, 0x0040A124, 0x0040A730, 0x00880140, 0x30060024, 0x300600C2,
}


def test_generated_table_matches_the_standard_counts() -> None:
    """The counts scripts/standard/README.md records for 2026d."""
    assert len(table.ROWS) == 657
    basic = collections.Counter(row[7] for row in table.ROWS)
    assert basic == {"X": 417, "D": 93, "U": 55, "Z": 42, "X/D": 23, "X/Z": 11, "X/Z/D": 8,
                     "Z/D": 6, "X/Z/U*": 2}
    cells = collections.Counter((OPTIONS[i], code) for row in table.ROWS
                                for i, code in enumerate(row[8]) if code)
    assert cells[("retain_long_full_dates", "K")] == 169
    assert cells[("retain_long_modified_dates", "C")] == 169
    assert cells[("clean_descriptors", "C")] == 141
    assert cells[("retain_uids", "K")] == 60
    assert cells[("retain_device_identity", "K")] == 48
    assert cells[("retain_device_identity", "C")] == 11
    assert cells[("retain_safe_private", "C")] == 1
    assert len(table.SAFE_PRIVATE) == 479
    assert table.CID7050["basic"] == ("113100", "DCM", "Basic Application Confidentiality Profile")
    assert set(table.CID7050) == {"basic", *OPTIONS}
    assert table.PROVENANCE["e1_1"]["source_rows_sha256"].startswith("e257bc5e")
    assert all(code in CODES for row in table.ROWS for code in (row[7], *row[8]) if code)


def test_generated_rows_are_what_the_generator_makes_from_the_source() -> None:
    spec = importlib.util.spec_from_file_location("gen", REPO / "scripts" / "gen_profile_table.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rows = json.loads((STANDARD / "ps3.15-e1-1.json").read_text())
    gen.check_e1_1(rows)  # exits unless the source digest matches
    assert tuple(gen.e1_1_rows(rows)) == table.ROWS
    assert tuple(gen.safe_private(json.loads((STANDARD / "ps3.15-safe-private.json")
                                             .read_text()))) == table.SAFE_PRIVATE


def test_gdcmanon_profile_is_its_48_attributes() -> None:
    profile = get_profile("gdcmanon")
    assert set(profile.actions) == GDCMANON_TAGS
    assert profile.method == "BASIC APPLICATION LEVEL CONFIDENTIALITY PROFILE"
    assert profile.method_codes() == [] and profile.private_rule is None
    assert {a for a in profile.actions.values()} == {Action.U, Action.Z, Action.D}


def test_basic_profile_is_the_whole_table() -> None:
    profile = get_profile("basic")
    assert profile.name == "basic" and profile.spec.table
    # the table's 653 tag rows, plus basic's own rows for the two alternative-calendar dates
    assert len(profile.rules) == 653 + 2 and set(profile.patterns) == {
        "curve", "overlay_data", "overlay_comments", "private"}
    assert profile.rules[0x00100010].code == "D"  # pseudonym (Z allows a dummy)
    assert profile.rules[0x00080020].code == "Z"
    assert profile.method_codes()[0][0] == "113100"


RESOLUTIONS = [
    ("X/Z", "3", "X"), ("X/Z", "2", "Z"), ("X/Z", "1", "Z"), ("X/Z", None, "Z"),
    ("X/D", "3", "X"), ("X/D", "2C", "D"), ("X/D", "1", "D"), ("X/D", None, "D"),
    ("Z/D", "3", "Z"), ("Z/D", "2", "Z"), ("Z/D", "1C", "D"), ("Z/D", None, "D"),
    ("X/Z/D", "3", "X"), ("X/Z/D", "2", "Z"), ("X/Z/D", "1", "D"), ("X/Z/D", None, "D"),
    ("X/Z/U*", "3", "U*"), ("X/Z/U*", "1", "U*"), ("X/Z/U*", None, "U*"),
    ("X", "1", "X"), ("D", None, "D"),
]


@pytest.mark.parametrize("code,kind,expected", RESOLUTIONS)
def test_conditional_codes_follow_the_type(code: str, kind: str | None, expected: str) -> None:
    assert resolve_code(code, kind)[0] == expected


def test_types_come_from_the_iod_and_the_parent_sequence() -> None:
    ct = iod_for_sop_class("1.2.840.10008.5.1.4.1.1.2")
    assert ct == "ct-image"
    assert attribute_type(ct, 0, 0x00080080) == "3"  # Institution Name: X/Z/D -> X
    assert attribute_type(ct, 0, 0x00100020) == "2"  # Patient ID at top level
    assert attribute_type(ct, 0x00101002, 0x00100020) == "1"  # in Other Patient IDs Seq.
    resolver = get_profile("basic").resolver("1.2.840.10008.5.1.4.1.1.2")
    decision = resolver.decide(0x00080080, 0)
    assert decision is not None and decision.action is Action.X
    assert "Type 3 -> X" in decision.reason()
    unknown = get_profile("basic").resolver("1.2.3.4.5").decide(0x00080080, 0)
    assert unknown is not None and unknown.action is Action.D
    assert "Type unknown" in unknown.reason()


def test_the_cleaner_option_wins_a_disagreement() -> None:
    # Date of Last Detector Calibration: device identity K, modified dates C, full dates K
    tag = 0x0018700C
    both = get_profile("basic", ["retain_device_identity", "retain_long_modified_dates"])
    assert both.rules[tag].code == "C" and "cleaner wins" in both.rules[tag].why
    keep = get_profile("basic", ["retain_device_identity", "retain_long_full_dates"])
    assert keep.rules[tag].code == "K"
    assert get_profile("basic").rules[tag].code == "X/D"


def test_site_profile_extends_basic() -> None:
    site = get_profile(str(PROFILE_DIR / "site-example.yaml"))
    assert site.name == "site-example"
    assert site.options == {"retain_long_modified_dates", "clean_descriptors"}
    assert site.rules[0x00080080].code == "X"  # InstitutionName forced
    assert site.rules[0x00081030].code == "C"
    assert site.rules[0x00100010].code == "D"  # inherited from basic
    assert "SIEMENS CSA HEADER" in site.keep_creators
    assert b"AX T1" in site.clean_allow[0x0008103E]
    assert "profile site-example" in site.rules[0x00081030].why
    assert site.spec.burned_in_sop_classes == load_profile("basic").burned_in_sop_classes


BAD_PROFILES = [
    ("name: x\ncolour: blue\n", "unknown key 'colour'"),
    ("name: x\noptions: [retain_everything]\n", "unknown option 'retain_everything'"),
    ("name: x\nactions: {NoSuchKeyword: X}\n", "unknown attribute 'NoSuchKeyword'"),
    ("name: x\nactions: {PatientName: Q}\n", "unknown code 'Q'"),
    ("name: x\ntable: ps3.15-2008\n", "table must be"),
    ("name: x\nmethod: " + "M" * 65 + "\n", "(0012,0063) is LO"),
    ("- just\n- a list\n", "a profile is a mapping"),
    ("name: x\noptions: retain_uids\n", "'options' must be a list"),
    ("name: x\ntable: none\noptions: [retain_uids]\n", "options need the"),
    ("name: x\nextends: nowhere-profile\n", "unknown profile 'nowhere-profile'"),
    ("name: x\nclean_allow: {StudyDescription: CHEST}\n", "give a list of values"),
    ("name: x\nburned_in_sop_classes: [not-a-uid]\n", "is not a UID"),
    ("name: x\n  bad: [indent\n", "not valid YAML"),
]


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_yaml_reads_the_same_through_libyaml(path: Path) -> None:
    """Profiles and pixel rules are read with libyaml's parser when PyYAML has it: the data
    must be what PyYAML's own parser makes of every shipped file."""
    import yaml

    assert yaml.__with_libyaml__, "the PyYAML wheel is built with libyaml"
    text = path.read_text()
    assert safe_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text,message", BAD_PROFILES)
def test_bad_profiles_are_refused_with_a_clear_error(text: str, message: str,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_profile(str(path))


def test_extends_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(f"name: a\nextends: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"name: b\nextends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ProfileError, match="loops back"):
        load_profile(str(tmp_path / "a.yaml"))


def test_unknown_profile_and_option_names() -> None:
    with pytest.raises(ProfileError, match="known: basic, gdcmanon"):
        get_profile("nonesuch")
    with pytest.raises(ProfileError, match="unknown option"):
        get_profile("basic", ["retain_all"])
    with pytest.raises(ProfileError, match="takes no options|its rows take no options"):
        get_profile("gdcmanon", ["retain_uids"])
