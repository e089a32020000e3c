"""Make the uncalibrated example pair shipped in ``radynversion/data/example_crispy/``.

The example scan (:func:`radynversion.datasets.example_observation`) as a 2014-era SST/CRISP
observation in crisPy level-2 format (:func:`radynversion.io.fits.write_crispy_l2`): int16 DN
without ``BUNIT`` and without a quiet-Sun calibration, one file per line, taken 4.5 s apart,
with the programs of the original Radynversion's example data (H-alpha 15 tunings 0.2 A
apart, Ca II 8542 25 tunings 0.1 A apart), both centred 30 mA blue of the air rest
wavelength, and a different gain per line. The profiles are interpolated linearly from the
example scan's CRISP tunings (already seen through the instrument, with its 1 % noise).

    python examples/make_example_crispy.py
"""

from pathlib import Path

import numpy as np

from radynversion.datasets import example_observation
from radynversion.io.fits import write_crispy_l2
from radynversion.lines import CA8542, HALPHA

OUT = Path(__file__).resolve().parent.parent / "radynversion" / "data" / "example_crispy"
PROGRAMS = {HALPHA.key: (15, 0.2), CA8542.key: (25, 0.1)}
OFFSET_A = -0.03


def main() -> None:
    scan = example_observation()
    if "time" in scan.dims:
        scan = scan.isel(time=0)
    for line, date, counts in ((HALPHA, "2014-09-06T15:27:24.000", 20000.0),
                               (CA8542, "2014-09-06T15:27:28.500", 12000.0)):
        n, step = PROGRAMS[line.key]
        wl = line.center_air_A + OFFSET_A + step * (np.arange(n) - n // 2)
        gain = float(scan[line.var].max()) / counts
        name = f"crisp_l2_20140906_152724_{round(line.center_air_A)}_r00447.fits"
        write_crispy_l2(OUT / name, scan, line, wl, gain, date, pointing_arcsec=(-738.0, -221.0))
        print(OUT / name)


if __name__ == "__main__":
    main()
