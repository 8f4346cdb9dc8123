"""Kernels for the heavy passes over J: flatten, Gram, combine (one backend per module)."""
