"""Pass 1's compiled header loop (tasks/_inventory.c) against the Python one
(``tasks.inventory._top_facts``): the same row fields and UID sets, or the compiled loop
hands over."""

from __future__ import annotations

from typing import Any

from tasks import inventory
from tasks.dicomio import DicomFile, read_to_pixels
from tasks.errors import AnonpipeError

#: the three kinds of replaced tags: the default profile's (every unregistered UID too), the
#: same tags alone (as with --retain-uids' relatives), and none at all
REPLACED = (inventory.replaced_tags(),
            frozenset(inventory.replaced_tags() - {inventory.EVERY_INSTANCE_UID}),
            frozenset())


def facts(loop: Any, df: DicomFile, replaced: frozenset[int]) -> Any:
    """(flags, row, every UID, mapped UIDs) from the compiled ``loop``, or from the Python
    loop when ``loop`` is None; None when the compiled loop hands over."""
    row: dict[str, Any] = {}
    every: set[str] = set()
    mapped: set[str] = set()
    if loop is None:
        flags = inventory._top_facts(df, replaced, row, every, mapped)
    else:
        flags = loop.top_facts(df.elements, df.body, inventory._FIELD_OF_TAG, replaced,
                               inventory.DEFINITION_UID_TAGS, inventory.registered, row,
                               every, mapped)
        if flags is None:
            return None
    return flags, row, every, mapped


def compare(data: bytes) -> int:
    """Both loops over ``data``'s header as pass 1 reads it; 1 per kind of replaced tags
    the compiled loop took itself."""
    loop = inventory._LOOP
    assert loop is not None, "the compiled loop is not built (make install)"
    try:
        df, _ = read_to_pixels(data, private_runs=True)
    except AnonpipeError:
        return 0
    taken = 0
    for replaced in REPLACED:
        compiled = facts(loop, df, replaced)
        expected = facts(None, df, replaced)
        if compiled is not None:
            assert compiled == expected
            taken += 1
        assert inventory.top_facts(df, replaced, {}, set(), set()) == expected[0]
    return taken
