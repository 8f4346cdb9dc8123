"""Shared set-up of the example tests (not a test file): paths, and the Hub kept offline.

The examples are the package ``examples`` (run as ``python -m examples.<name>``); the tests
import it from the repository root, which ``python -m pytest`` run there puts on ``sys.path``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DATA_DIR = REPO.parent / "shared" / "data"

# Never touch the Hub from the tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_script():
    """The training script as a module."""
    from examples import train_glue_summarization

    return train_glue_summarization
