"""Import helpers for the tests of ``examples/train_glue_summarization.py`` (not a test file)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# Never touch the Hub from the tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


def load_script():
    """The training script as a module (loaded once, from its file path)."""
    name = "train_glue_summarization"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
