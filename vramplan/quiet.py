"""Quiet, honest stderr: library messages that are not the user's problem are explained once or dropped.

Installed by the commands that load torch (`run`, `calibrate`), before the libraries load; no
library is patched: these are `logging` filters on the libraries' own loggers, and the
progress-bar switches transformers and huggingface_hub offer.
"""

from __future__ import annotations

import logging
from typing import Callable

# (the exact logger, start of the message) -> what it means, said once; None: dropped. A logger's
# filters see only what is logged on that logger itself, so the name is the emitting module's.
EXPLAINED = {
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"): (
        "bitsandbytes runs 4-bit matmuls on the CPU with its built-in kernel (the optional `kernels` package "
        "is not installed): same results, a little slower; nothing to fix"
    ),
}


class ExplainOnce(logging.Filter):
    """Drop the known messages; the first of each kind is replaced by one plain `note:` line."""

    def __init__(self, say: Callable[[str], None]):
        super().__init__()
        self.say = say
        self.said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage() if record.args else str(record.msg)
        for (logger, start), explanation in EXPLAINED.items():
            if record.name == logger and message.startswith(start):
                if explanation and start not in self.said:
                    self.said.add(start)
                    self.say(f"note: {explanation}")
                return False
        return True


_installed: ExplainOnce | None = None


def quiet_libraries(say: Callable[[str], None], progress: bool = True) -> None:
    """Install the filter on each library's logger (once per process) and, without `progress`, turn
    off the loading bars of transformers and huggingface_hub."""
    global _installed
    if _installed is None:
        _installed = ExplainOnce(say)
        for logger in {name for name, _ in EXPLAINED}:
            logging.getLogger(logger).addFilter(_installed)
    else:
        _installed.say = say
    if not progress:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        disable_progress_bars()
