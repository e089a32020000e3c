"""The README's walkthrough runs as written, in a fresh clone of the repository."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = "## Walkthrough"


def walkthrough_blocks(readme: str) -> list[tuple[str, str]]:
    """The fenced ``bash`` and ``python`` blocks of the README section whose heading starts with
    :data:`WALKTHROUGH`, in order, as ``(language, code)``."""
    start = readme.index(WALKTHROUGH)
    end = readme.find("\n## ", start + len(WALKTHROUGH))
    section = readme[start : end if end >= 0 else None]
    return re.findall(r"^```(bash|python)\n(.*?)^```$", section, flags=re.M | re.S)


def walkthrough_script(readme: str) -> str:
    """One bash script of the walkthrough: bash blocks as they are, python blocks fed to ``python``."""
    parts = []
    for lang, code in walkthrough_blocks(readme):
        parts.append(code if lang == "bash" else f"python - <<'README_PYTHON'\n{code}README_PYTHON\n")
    return "\n".join(parts)


def test_walkthrough_is_found_and_covers_the_whole_path():
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    assert [lang for lang, _ in blocks] == ["bash", "python", "python"]
    text = "\n".join(code for _, code in blocks)
    for step in ("example_scan()", "radynversion invert", "radynversion plot", "radynversion verify",
                 "map_header", "sunpy.map.Map", "example_observation()", ".radyn.invert("):
        assert step in text, step


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_walkthrough_runs_in_a_fresh_clone(tmp_path):
    """Every command of the walkthrough, in a clone of HEAD that reuses this checkout's .venv."""
    venv = ROOT / ".venv"
    if not (venv / "bin" / "radynversion").exists():
        pytest.skip("no .venv with radynversion installed (make test makes it)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(venv)  # what make demo / make test would have made
    env = {**os.environ, "PYTHONPATH": str(clone), "MPLBACKEND": "Agg"}  # the clone's code, not ours
    env.pop("VIRTUAL_ENV", None)
    script = walkthrough_script((clone / "README.md").read_text())
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=1100)
    assert run.returncode == 0, f"stdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"
    for made in ("walk.zarr", "walk.zarr_plots/maps_t0000.png", "walk.zarr_verify.nc", "walk.zarr_verify.png",
                 "log_T_1Mm.fits", "ribbon_maps.png"):
        assert (clone / made).exists(), made
