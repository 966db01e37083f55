"""Put trained runs into the package as its pretrained weights (``src/arsmooth/weights/``).

    python scripts/ship_pretrained.py mnist results/images/mnist/runs

exports RUNS/{baseline,stage1,stage2}/last.pt (those present) as safetensors and records each file's
SHA-256 and training budget in ``weights/manifest.json``; ``arsmooth pretrained`` lists the result.
"""

import argparse
from pathlib import Path

from arsmooth.models.pretrained import KINDS, ship

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("name", help="dataset name users will pass to --pretrained (e.g. mnist)")
p.add_argument("runs", help="folder holding the baseline / stage1 / stage2 run folders")
a = p.parse_args()
runs = {k: Path(a.runs) / k for k in KINDS if (Path(a.runs) / k / "last.pt").is_file()}
for kind, e in ship(a.name, runs).items():
    print(f"{a.name} {kind}: {e['file']} sha256 {e['sha256'][:12]}... ({e['images_seen']:,} images)")
