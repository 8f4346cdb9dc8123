"""A part's verdict (PASS, FAIL or SKIP and why) and the script's exit codes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXIT_FAIL", "EXIT_NO_GPU", "EXIT_OK", "NO_GPU_MESSAGE", "Part"]

EXIT_OK, EXIT_FAIL, EXIT_NO_GPU = 0, 1, 2
NO_GPU_MESSAGE = "no CUDA device: nothing to check"


@dataclass
class Part:
    """One part's verdict: PASS, FAIL or SKIP, and a one-line reason."""

    name: str
    status: str = "SKIP"
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        """The part's line of the summary: name, verdict, reason, seconds (from 1 s)."""
        took = f" ({self.seconds:.0f} s)" if self.seconds >= 1 else ""
        return f"{self.name:<6} {self.status:<4}  {self.detail}{took}"
