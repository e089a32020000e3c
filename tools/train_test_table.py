"""The train-on-X / test-on-Y table of issue 23 from ``tools/ood_study.py`` reports.

Each report is one model (trained on X) scored on the same populations (held-out draws of the
old prior, of each generator, and ``check_v1``); this prints one Markdown row per model and
population: 68 / 90 % coverage and the median error of each parameter beside the population's
own marginal-median baseline, on all pixels, and the share the model trusts.

    .venv/bin/python tools/train_test_table.py "prior (v7)=docs/evaluation/trust/union_v9_heldout_v7.json" \\
        "union v9=docs/evaluation/trust/union_v9_heldout_v9.json" > docs/evaluation/trust/train_test_table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"held-out": "old prior", "smooth_held": "smooth", "noneq_held": "noneq", "check": "check_v1"}
UNITS = {"log_T": "dex", "log_ne": "dex", "v": "km/s"}


def main(specs: list[str]) -> None:
    print("| trained on | tested on (pixels) | trusted | `log_T` 68/90 %, error [baseline] | "
          "`log_ne` 68/90 %, error [baseline] | `v` 68/90 %, error [baseline] |")
    print("|---|---|---|---|---|---|")
    for spec in specs:
        name, path = spec.split("=", 1)
        report = json.loads(Path(path).read_text())
        for key, label in NAMES.items():
            if key not in report:
                continue
            e = report[key]
            cells = []
            for v in ("log_T", "log_ne", "v"):
                s = e["all"][v]
                cells.append(f"{s['coverage68']:.2f}/{s['coverage90']:.2f}, {s['median_abs_error']:.3g} "
                             f"[{s['baseline_median_abs_error']:.3g}]")
            print(f"| {name} | {label} ({e['n']}) | {e['model']['trusted']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
