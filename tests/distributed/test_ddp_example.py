"""examples/ddp_train.py under torchrun (two gloo ranks): its result matches one process."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp_train.py"


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_torchrun_example_matches_one_process():
    # (FSDP2 is covered by test_ddp.py; one launch keeps the suite short.)
    extra: list[str] = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(EXAMPLE),
        "--steps",
        "3",
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"2 process\(es\), exact: max \|parameter difference\| vs one process = (\S+)", done.stdout)
    assert match, done.stdout
    assert float(match.group(1)) < 1e-5
