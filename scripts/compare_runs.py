"""Compare two folders written by ``scripts/quick_all.py``: every JSON file key by key, floats exactly,
leaving out wall times and what depends on them. Prints one line per file; exits 1 if any differ.

    python scripts/compare_runs.py /tmp/before /tmp/after [--new-keys network,tf_width,...]

``--new-keys`` names keys a change added (new settings, recorded in every config): present in the second
folder only, they are not counted as differences; every other key must match.
"""

import json
import math
import sys
from pathlib import Path

TIMING = {"wall_time_s", "train_seconds", "seconds", "command", "s", "time", "train_images_per_s", "cpu_hours",
          "wall_hours", "data_root"}  # data_root: each folder holds its own fake data


def differences(x, y, path: str, out: list) -> None:
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y), key=str):
            if k in TIMING or "second" in str(k):
                continue
            if k not in x and k in NEW_KEYS:
                continue
            if k not in x or k not in y:
                out.append(f"{path}.{k}: on one side only")
            else:
                differences(x[k], y[k], f"{path}.{k}", out)
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            differences(u, v, f"{path}[{i}]", out)
    elif isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return
    elif x != y:
        out.append(f"{path}: {x!r} vs {y!r}")


args = sys.argv[1:]
NEW_KEYS = set(args[args.index("--new-keys") + 1].split(",")) if "--new-keys" in args else set()
a, b = Path(args[0]), Path(args[1])
bad = n = 0
for f in sorted(a.rglob("*.json")):
    if f.name.startswith("real_baseline"):  # a cache of the real-vs-real metrics
        continue
    g = b / f.relative_to(a)
    found: list = []
    if not g.is_file():
        found.append("missing in the second folder")
    else:
        differences(json.loads(f.read_text()), json.loads(g.read_text()), f.name, found)
    n += 1
    bad += bool(found)
    print(f.relative_to(a), "same" if not found else f"{len(found)} differences: " + "; ".join(found[:4]))
print(f"{n} files compared, {bad} differ")
sys.exit(1 if bad else 0)
