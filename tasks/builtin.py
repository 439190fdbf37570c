"""Where the built-in YAML (profiles, cluster definitions) lives: the ``configs/`` folder of
this checkout, installed as the data package ``anonpipe_configs``.

Why not a path beside the code: a wheel puts ``tasks`` in site-packages and ``configs/`` would
not follow; the package-data route finds it in both layouts (editable and installed).
"""

from __future__ import annotations

import functools
from pathlib import Path

CHECKOUT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@functools.cache
def config_dir(kind: str) -> Path:
    """``configs/<kind>`` (``profiles`` or ``cluster``) of the installed package, else of the
    checkout (running from a source tree without installing)."""
    # the package's folder from its spec: importlib.resources would import zipfile (~3 ms
    # at every start) for a folder on disk
    from importlib.util import find_spec

    spec = find_spec("anonpipe_configs")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    return (Path(locations[0]) if locations else CHECKOUT_CONFIGS) / kind
