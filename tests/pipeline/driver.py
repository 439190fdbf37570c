"""A driver process for kill-and-resume tests: ``python -m tests.pipeline.driver ARGS``.

Builds the same job as ``conftest.deid_job`` (optionally slowed down) and prints the
summary as one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.runner import run_tree
from tasks.deidentify import Deidentify, DeidentifySettings
from tests.pipeline.conftest import SECRET, deid_job
from tests.pipeline.slowop import SlowDeidentify


def main(argv: list[str]) -> int:
    src, out, store, workers, delay = argv[0], argv[1], argv[2], int(argv[3]), float(argv[4])
    pool = argv[5] if len(argv) > 5 else "dask"  # TreeJob.local_pool
    op = SlowDeidentify(Deidentify(DeidentifySettings(secret=SECRET)), delay)
    job = deid_job(Path(src), Path(out), Path(store), operation=op, workers=workers,
                   inline_below=0, batch_files=5, local_pool=pool)
    summary = run_tree(job)
    print(json.dumps({"done": summary.done, "skipped": summary.skipped,
                      "failed": summary.failed}))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
