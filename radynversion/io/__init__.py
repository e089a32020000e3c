"""Readers and writers: observations (SST/CRISP FITS, CRISPEX La Palma cubes, netCDF, Zarr), RADYN output and the
original Radynversion training pickle."""

from .fits import map_header, read_crispy_fits, read_sstred_cube, write_crispy_l2, write_sstred_cube
from .lapalma import read_lapalma_cube, write_lapalma_cube
from .observation import open_observation
from .radyn import import_radyn, read_radyn_cdf, read_radynversion_pickle

__all__ = [
    "open_observation",
    "read_sstred_cube",
    "read_crispy_fits",
    "map_header",
    "write_sstred_cube",
    "write_crispy_l2",
    "read_lapalma_cube",
    "write_lapalma_cube",
    "import_radyn",
    "read_radyn_cdf",
    "read_radynversion_pickle",
]
