"""Compare two ``make bench`` results: medians side by side, and each anonpipe row's ratio to
gdcmanon in its own run (the ratio travels better between runs than the wall time does, since
the disk state of this VM moves both).

    .venv/bin/python benchmarks/compare.py OLD.json NEW.json
    .venv/bin/python benchmarks/compare.py            # the two newest in benchmarks/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    data = json.loads(path.read_text())
    return {(row["archive"], row["command"]): row for row in data["results"]}


def ratio_to_gdcmanon(rows: dict[tuple[str, str], dict[str, Any]], archive: str,
                      command: str) -> float | None:
    """wall / wall of the matching gdcmanon row (-e, or -d for re-identification)."""
    peer = "gdcmanon -d" if command == "anonpipe -d" else "gdcmanon -e"
    row, base = rows.get((archive, command)), rows.get((archive, peer))
    if not command.startswith("anonpipe") or row is None or base is None:
        return None
    return float(row["wall_median_s"]) / max(float(base["wall_median_s"]), 1e-9)


def table(old: dict[tuple[str, str], dict[str, Any]],
          new: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    def cell(value: float | None, form: str) -> str:
        return format(value, form) if value is not None else "-"

    header = (f"{'archive':9} {'command':38} {'old s':>8} {'new s':>8} {'old user':>9} "
              f"{'new user':>9} {'old /gdcm':>9} {'new /gdcm':>9}")
    lines = [header]
    for key in [k for k in new if k in old] + [k for k in new if k not in old]:
        archive, command = key
        a, b = old.get(key), new[key]
        lines.append(
            f"{archive:9} {command:38} "
            f"{cell(a and a['wall_median_s'], '8.3f'):>8} {b['wall_median_s']:8.3f} "
            f"{cell(a and a['user_ms_per_file'], '9.3f'):>9} {b['user_ms_per_file']:9.3f} "
            f"{cell(ratio_to_gdcmanon(old, archive, command), '9.2f'):>9} "
            f"{cell(ratio_to_gdcmanon(new, archive, command), '9.2f'):>9}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) == 2:
        old_path, new_path = Path(argv[0]), Path(argv[1])
    elif not argv:
        runs = sorted(RESULTS.glob("bench-*.json"))
        if len(runs) < 2:
            print("fewer than two results in benchmarks/results", file=sys.stderr)
            return 2
        old_path, new_path = runs[-2], runs[-1]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"old: {old_path.name}\nnew: {new_path.name}  (user = user ms per file; "
          "/gdcm = wall / gdcmanon's wall in the same run)")
    print("\n".join(table(load(old_path), load(new_path))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
