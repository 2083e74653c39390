"""Compare the records of two results folders, timings aside: do two runners (or two machines) record the same runs?

    python benchmarks/compare_records.py results/a results/b

Prints each record key found in only one folder and each field that differs, then a summary; exit 0 when the
records are equal. Timings, the command line and the machine are left out (``IGNORED``), and so is whether the
features came from the cache (``n_cached``/``n_computed``, ``earlier_seconds_per_1k``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

IGNORED = {
    "probe_seconds", "seconds", "cross_validation_seconds", "reverse_validation_seconds", "selection_seconds", "fit_seconds",
    "command", "machine", "n_cached", "n_computed", "earlier_seconds_per_1k", "traceback", "root",
}  # fmt: skip


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: _comparable(json.loads(p.read_text())) for p in sorted((folder / "records").glob("*.json"))}


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{where}{key}: only in {'second' if key not in a else 'first'}")
            else:
                found += _differences(a[key], b[key], f"{where}{key}.")
        return found
    return [] if a == b else [f"{where.rstrip('.')}: {a!r} != {b!r}"]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    first, second = (_records(Path(a)) for a in argv)
    problems = [f"{key}: only in {argv[0]}" for key in sorted(set(first) - set(second))]
    problems += [f"{key}: only in {argv[1]}" for key in sorted(set(second) - set(first))]
    for key in sorted(set(first) & set(second)):
        problems += [f"{key} {d}" for d in _differences(first[key], second[key])]
    for line in problems:
        print(line)
    print(f"{len(set(first) & set(second))} records in both, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
