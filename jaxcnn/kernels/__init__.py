"""Pallas kernels behind the layers' 'pallas' implementations."""
