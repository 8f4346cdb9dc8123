"""Runnable examples of gradsurg, a package so that they run as ``python -m examples.<name>``
from the repository root and share :mod:`examples.mtl` without touching ``sys.path``."""
