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
    try:
        from importlib.resources import files

        root = Path(str(files("anonpipe_configs")))
    except ModuleNotFoundError:
        root = CHECKOUT_CONFIGS
    return root / kind
