"""Score models by observing program: both lines, each alone, short windows, gaps, DN.

For each ``--case NAME=MODEL[:PROGRAM][:dn]`` (PROGRAM: a packaged program's name, e.g.
``halpha_only``, or a TOML file) runs ``radynversion.evaluate`` on the
model's held-out split of the prior's first ``--first`` draws (1 % noise, 512 draws, fp32) and
writes a markdown table of the chromosphere band (0.5 Mm to the TR): 68 / 90 % coverage and the
median error of the posterior median, against the prior-only baseline, plus the mean width of
the 68 % intervals against the prior's (how much the posterior widens when information is lost).

    .venv/bin/python tools/program_study.py --first 12000 --out docs/evaluation/programs/table.md \\
        --case "both=runs/cand/partial_joint/model.pt" \\
        --case "halpha alone=runs/cand/partial_joint/model.pt:halpha_only"
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from radynversion.datasets import training_set
from radynversion.evaluate import EvaluationSettings, evaluate
from radynversion.instrument import observing_program
from radynversion.model import load_model, sample_labels

warnings.filterwarnings("ignore")
VARS = ("log_T", "log_ne", "v")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", required=True, help="NAME=MODEL[:PROGRAM][:dn]")
    ap.add_argument("--first", type=int, default=12000)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    data = training_set()
    data = data.isel(sample=sample_labels(data) < a.first)
    rows, raw = [], {}
    cases = []  # every case's program read before any evaluation, so a typo costs nothing
    for case in a.case:
        name, spec = case.split("=", 1)
        parts = spec.split(":")
        programs = [observing_program(p) for p in parts[1:] if p != "dn"]
        cases.append((name, parts, parts[0], programs[-1] if programs else None, "dn" in parts[1:]))
    for name, parts, model, program, dn in cases:
        net = load_model(None if model == "default" else model)
        res = evaluate(net, data, EvaluationSettings(samples=a.samples, tunings=program, dn=dn))
        s = res.summary
        raw[name] = {"model": model, "program": parts[1] if len(parts) > 1 else "CRISP default", "dn": dn,
                     "parameters": s["parameters"], "round_trip": s["round_trip"]}
        cells = []
        for v in VARS:
            c = s["parameters"][v]["chromosphere"]
            cells.append(f"{c['coverage68']:.2f} / {c['coverage90']:.2f} | {c['median_abs_error']:.3g} "
                         f"[{c['prior_median_abs_error']:.3g}] | {c['width_ratio_to_prior']:.2f}")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {s['round_trip']['misfit_median_pct']:.2f} |")
        print(rows[-1], flush=True)
    head = ("| case | " + " | ".join(f"{v}: 68/90 % cov. | error [prior] | width/prior" for v in VARS)
            + " | round trip % |\n|" + "---|" * (1 + 3 * len(VARS) + 1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(head + "\n" + "\n".join(rows) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
