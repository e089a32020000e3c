"""The research tools' own self-checks, run as scripts (tests never import tools/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_doppler_copies_shift_red_for_a_downflow_and_hold_the_edges():
    proc = subprocess.run([sys.executable, str(TOOLS / "_doppler.py")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sign convention and edges OK" in proc.stdout
