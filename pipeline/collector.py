"""The cyclic garbage collector's settings for the driver and the pool workers.

A run allocates container objects by the million (element lists, rows, dicts of a page of
the store) and frees nearly all of them by reference counting: they hold no cycles.  With
the default threshold (700 allocations) the collector still ran thousands of times per run,
each time walking every object the imports left, ~5 % of a CT series' CPU in a profile
(``gc_collect_main``, ``visit_decref``).  The objects alive after start-up are moved out of
its sight (``gc.freeze``) and the youngest generation is collected every 50,000
allocations instead: what cycles there are (tracebacks of refused files) are still freed.

Before that, while the driver imports its modules and reads its options, the collector does
not run at all (:func:`start_up`): the imports leave ~37,000 objects the collector tracks
and free few, so each collection would walk what the last one kept, for nothing (a
one-slice run took 4-5 ms less: benchmarks/README.md).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: allocations (less deallocations) between two collections of the youngest generation
YOUNG = 50_000


def settle() -> None:
    """Freeze what start-up allocated and collect the young generation less often."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


@contextmanager
def start_up() -> Iterator[None]:
    """No collection within the block (the imports and options of a run), then
    :func:`settle`, however the block ends; the collector is then on again if it was on."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        settle()
        if was_on:
            gc.enable()
