"""Tag specifications as gdcmanon's dumb mode spells them (its manual page's grammar).

``g,e`` names a public attribute (each part hex, at most 4 digits: ``10,10`` is (0010,0010)).
``g,e,CREATOR`` names a private attribute: the group must be odd, the element's low byte is
the offset inside the block the creator reserved (PS3.5 7.8.1), so ``9,1001,X`` and
``9,01,X`` are the same attribute; the creator is compared case-insensitively with the
trimmed Private Creator values of the file.

Where gdcmanon silently reinterprets a malformed spec (an even group with a creator, an
empty creator or one with a backslash all fall back to the public tag) we refuse it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from tasks.errors import ProfileError

_HEX = r"[0-9A-Fa-f]{1,4}"
_TAG_RE = re.compile(rf"^({_HEX}),({_HEX})(?:,(.*))?$", re.DOTALL)
#: control characters a Private Creator (LO, PS3.5 Table 6.2-1) may not hold
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_CREATOR_CHARS = 64  # LO


class TagSpec(NamedTuple):
    """A public tag, or a private one addressed by creator and offset.

    For a private spec ``element`` is the offset in the creator's block (0x00-0xFF) and
    ``creator`` the trimmed creator string as typed.
    """

    group: int
    element: int
    creator: str | None = None

    @property
    def private(self) -> bool:
        return self.creator is not None

    @property
    def tag(self) -> int:
        """The 32-bit tag of a public spec (a private one only knows its block per file)."""
        if self.creator is not None:
            raise ValueError(f"{self} has no fixed tag: its block depends on the file")
        return (self.group << 16) | self.element

    def key(self) -> tuple[int, int, str | None]:
        """What two specs naming the same attribute share (creator case-folded)."""
        return (self.group, self.element,
                None if self.creator is None else self.creator.casefold())

    def __str__(self) -> str:
        if self.creator is None:
            return f"({self.group:04X},{self.element:04X})"
        return f"({self.group:04X},xx{self.element:02X},{self.creator!r})"


def parse_tag(text: str) -> TagSpec:
    """``g,e`` or ``g,e,CREATOR``; ProfileError naming ``text`` when malformed."""
    match = _TAG_RE.match(text)
    if match is None:
        raise ProfileError(
            f"cannot read tag {text!r}: expected g,e or g,e,CREATOR with g and e hexadecimal "
            "(at most 4 digits each), e.g. 10,10 or '0029,20,SIEMENS MEDCOM HEADER'"
        )
    group, element = int(match.group(1), 16), int(match.group(2), 16)
    raw_creator = match.group(3)
    if raw_creator is None:
        return TagSpec(group, element)
    return TagSpec(group, element & 0xFF, _check_creator(text, group, raw_creator))


def _check_creator(text: str, group: int, raw: str) -> str:
    creator = raw.strip(" ")
    if group % 2 == 0:
        raise ProfileError(
            f"tag {text!r}: group {group:04X} is even, so it has no private creator "
            f"(gdcmanon would silently ignore {raw!r}); drop the creator for a public "
            "attribute, or use an odd group"
        )
    if group < 0x0009 or group == 0xFFFF:
        raise ProfileError(
            f"tag {text!r}: group {group:04X} cannot hold private attributes "
            "(PS3.5 7.8.1: odd groups 0009-FFFD only)"
        )
    if not creator:
        raise ProfileError(f"tag {text!r}: the private creator is empty")
    if "\\" in creator:
        raise ProfileError(f"tag {text!r}: a private creator cannot contain a backslash")
    if _CONTROL_RE.search(creator):
        raise ProfileError(f"tag {text!r}: the private creator contains control characters")
    if len(creator) > MAX_CREATOR_CHARS:
        raise ProfileError(
            f"tag {text!r}: the private creator has {len(creator)} characters, "
            f"at most {MAX_CREATOR_CHARS} fit (LO)"
        )
    return creator


def parse_replace(text: str) -> tuple[TagSpec, str]:
    """A ``--replace`` argument: the tag spec and the value, taken verbatim.

    Accepted forms: ``g,e=VALUE``; gdcmanon's ``g,e,VALUE`` (even group: the rest after the
    second comma is the value, ``=`` included, as gdcmanon reads it); private
    ``g,e,CREATOR=VALUE`` (odd group, split at the first ``=``).  A bare ``g,e`` is refused
    (gdcmanon takes it as an empty value): write ``g,e=`` for that.
    """
    match = re.match(rf"^({_HEX}),({_HEX})([=,])(.*)$", text, re.DOTALL)
    if match is None:
        if re.fullmatch(rf"{_HEX},{_HEX}", text):
            raise ProfileError(
                f"replace {text!r}: no value; write {text}=VALUE (or {text}= for an empty value)"
            )
        raise ProfileError(
            f"cannot read replace {text!r}: expected g,e=VALUE, g,e,VALUE or "
            "g,e,CREATOR=VALUE (g and e hexadecimal, at most 4 digits each)"
        )
    group_text, element_text, separator, rest = match.groups()
    group, element = int(group_text, 16), int(element_text, 16)
    if separator == "=" or group % 2 == 0:
        return TagSpec(group, element), rest
    # odd group after a comma: a private g,e,CREATOR=VALUE
    creator, equals, value = rest.partition("=")
    if not equals:
        raise ProfileError(
            f"replace {text!r}: for a private attribute write g,e,CREATOR=VALUE; for the "
            f"attribute ({group:04X},{element:04X}) itself write {group_text},{element_text}=VALUE"
        )
    return TagSpec(group, element & 0xFF, _check_creator(text, group, creator)), value
