"""Readers and writers: RADYN output, the original training pickle, observations."""
