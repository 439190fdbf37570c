"""Tag specifications in gdcmanon's dumb-mode syntax, and our refusals."""

from __future__ import annotations

import pytest

from tasks.errors import ProfileError
from tasks.tagspec import TagSpec, parse_replace, parse_tag

GOOD_TAGS = [
    ("10,10", TagSpec(0x0010, 0x0010)),
    ("0010,0010", TagSpec(0x0010, 0x0010)),
    ("8,103e", TagSpec(0x0008, 0x103E)),
    ("8,103E", TagSpec(0x0008, 0x103E)),
    ("400,500", TagSpec(0x0400, 0x0500)),
    ("9,1001", TagSpec(0x0009, 0x1001)),  # a private tag named publicly
    ("0029,20,SIEMENS MEDCOM HEADER", TagSpec(0x0029, 0x20, "SIEMENS MEDCOM HEADER")),
    ("9,1001,GEMS_IDEN_01", TagSpec(0x0009, 0x01, "GEMS_IDEN_01")),
    ("9,01,GEMS_IDEN_01", TagSpec(0x0009, 0x01, "GEMS_IDEN_01")),  # low byte only
    ("9,1101,GEMS_IDEN_01", TagSpec(0x0009, 0x01, "GEMS_IDEN_01")),  # high byte ignored
    ("9,1001,  padded creator  ", TagSpec(0x0009, 0x01, "padded creator")),
    ("fffd,10,X", TagSpec(0xFFFD, 0x10, "X")),
]

BAD_TAGS = [
    ("", "cannot read tag"),
    ("00100010", "cannot read tag"),  # gdcmanon: "Could not read Tag/PrivateTag"
    ("(0010,0010)", "cannot read tag"),
    ("10,10000", "cannot read tag"),
    ("10000,10", "cannot read tag"),
    ("10;10", "cannot read tag"),
    ("g,10", "cannot read tag"),
    (" 10,10", "cannot read tag"),
    ("10,", "cannot read tag"),
    ("10,10,ABC", "group 0010 is even"),  # gdcmanon silently ignores the creator
    ("9,1001,", "creator is empty"),  # gdcmanon falls back to (0009,1001)
    ("9,1001,   ", "creator is empty"),
    ("9,1001,A\\B", "backslash"),
    ("9,1001,A\tB", "control characters"),
    ("9,1001," + "X" * 65, "65 characters, at most 64"),
    ("7,1001,X", "group 0007 cannot hold private"),
    ("1,1001,X", "group 0001 cannot hold private"),
    ("ffff,1001,X", "group FFFF cannot hold private"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD_TAGS)
def test_parse_tag(text: str, expected: TagSpec) -> None:
    assert parse_tag(text) == expected


@pytest.mark.parametrize(("text", "match"), BAD_TAGS)
def test_parse_tag_refuses(text: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match) as info:
        parse_tag(text)
    assert repr(text) in str(info.value)  # the error names what was typed


def test_private_spec_identity_is_case_insensitive() -> None:
    assert parse_tag("9,1001,gems_iden_01").key() == parse_tag("9,01,GEMS_IDEN_01").key()
    assert parse_tag("9,1001,gems_iden_01") != parse_tag("9,01,GEMS_IDEN_01")  # as typed


def test_public_spec_has_a_tag_private_has_none() -> None:
    assert parse_tag("10,10").tag == 0x00100010
    assert not parse_tag("10,10").private
    spec = parse_tag("9,1001,GEMS")
    assert spec.private
    with pytest.raises(ValueError, match="block depends on the file"):
        _ = spec.tag


def test_str_names_the_attribute() -> None:
    assert str(parse_tag("10,10")) == "(0010,0010)"
    assert str(parse_tag("29,1020,SIEMENS MEDCOM HEADER")) == "(0029,xx20,'SIEMENS MEDCOM HEADER')"


GOOD_REPLACES = [
    ("10,1030=VALUE", TagSpec(0x0010, 0x1030), "VALUE"),
    ("10,1030,10", TagSpec(0x0010, 0x1030), "10"),  # the manpage's own form
    ("10,10=", TagSpec(0x0010, 0x0010), ""),
    ("10,10,", TagSpec(0x0010, 0x0010), ""),
    ("10,10= leading", TagSpec(0x0010, 0x0010), " leading"),  # verbatim
    ("10,10=A\\B", TagSpec(0x0010, 0x0010), "A\\B"),
    ("10,10=A=B", TagSpec(0x0010, 0x0010), "A=B"),
    ("10,10,A=B", TagSpec(0x0010, 0x0010), "A=B"),  # even group: gdcmanon's value
    ("10,10,A,B", TagSpec(0x0010, 0x0010), "A,B"),
    ("9,1001,GEMS_IDEN_01=abc", TagSpec(0x0009, 0x01, "GEMS_IDEN_01"), "abc"),
    ("9,1001,GEMS_IDEN_01=a=b", TagSpec(0x0009, 0x01, "GEMS_IDEN_01"), "a=b"),  # first '='
    ("9,1001,GEMS_IDEN_01=", TagSpec(0x0009, 0x01, "GEMS_IDEN_01"), ""),
    ("29,20,SIEMENS MEDCOM HEADER=x y", TagSpec(0x0029, 0x20, "SIEMENS MEDCOM HEADER"), "x y"),
    ("9,1001=abc", TagSpec(0x0009, 0x1001), "abc"),  # a private tag named publicly
]

BAD_REPLACES = [
    ("10,10", "no value; write 10,10=VALUE"),  # gdcmanon takes an empty value
    ("10", "cannot read replace"),
    ("00100010=X", "cannot read replace"),
    ("(0010,0010)=X", "cannot read replace"),
    ("9,1001,abc", "write g,e,CREATOR=VALUE"),
    ("9,1001,=abc", "creator is empty"),
    ("9,1001,A\\B=abc", "backslash"),
    ("7,1001,X=abc", "cannot hold private"),
]


@pytest.mark.parametrize(("text", "spec", "value"), GOOD_REPLACES)
def test_parse_replace(text: str, spec: TagSpec, value: str) -> None:
    assert parse_replace(text) == (spec, value)


@pytest.mark.parametrize(("text", "match"), BAD_REPLACES)
def test_parse_replace_refuses(text: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        parse_replace(text)
