"""The version of gradsurg, in one place: ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``)
and ``gradsurg.__version__`` re-exports it."""

__version__ = "0.1.0"
