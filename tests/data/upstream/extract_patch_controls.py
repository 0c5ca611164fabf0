"""Writes patch_controls.json: what the published patch records say about each search's probes.

The records (patches/v*_patches/patch_<domain>.json, 0.4-3.3 MB each) hold, in every accepted flip,
the gap of every target and control by name. Only the names are kept here: the control list the
search scored (from the first flip), its targets, the targets whose gap was > 0 when it finished
(after the last accepted flip) and the controls whose gap was exactly 0 in every flip.

    python tests/data/upstream/extract_patch_controls.py /path/to/Neagari/checkout

reads the records from a checkout of the upstream repository at the commit in README.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

RECORDS = ["v2_patches/patch_tool_calling.json", "v2_patches/patch_math.json", "v2_patches/patch_coding.json",
           "v3_patches/patch_tool_calling.json", "v3_patches/patch_editing.json",
           "v3_patches/patch_coding.json", "v3_patches/patch_math.json"]


def summary(raw: bytes) -> dict:
    doc = json.loads(raw)
    flips = doc["flips"]
    first, last = flips[0], flips[-1]
    controls = [n for n, _ in first["control_gaps_before"]]
    zero = [n for i, n in enumerate(controls)
            if all(f[k][i][1] == 0.0 for f in flips for k in ("control_gaps_before", "control_gaps_after"))]
    return {"sha256": hashlib.sha256(raw).hexdigest(), "domain": doc["domain"], "flips": len(flips),
            "controls": controls, "targets": [n for n, _ in first["target_gaps_before"]],
            "positive_after": [n for n, g in last["target_gaps_after"] if g > 0],
            "zero_gap_controls": sorted(set(zero))}


def main(checkout: Path) -> None:
    out = {path: summary((checkout / "patches" / path).read_bytes()) for path in RECORDS}
    dest = Path(__file__).with_name("patch_controls.json")
    dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
