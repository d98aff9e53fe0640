"""Compiled Cython kernels (built from ``ext/*.pyx`` at install time)."""
