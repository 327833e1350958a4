"""ftlab: LLM fine-tuning built from scratch and proven against the libraries industry uses."""

from __future__ import annotations

import inspect
import logging
import warnings

__version__ = "0.1.0"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _quiet_known_noise() -> None:
    """Hide two harmless messages that newcomers read as a broken setup, and nothing else.

    bitsandbytes (imported by peft) logs that it cannot fetch an optional fused CPU kernel from the hub
    and suggests `pip install kernels`; its built-in CPU path is what the course uses anyway, offline.
    transformers warns that `is_gradient_checkpointing` is deprecated whenever peft reads it.
    Both come from library internals that no learner code can change. Import ftlab before peft.
    """
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        _DropMessage("Failed to load CPU gemm_4bit_forward from kernels-community"))
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


_quiet_known_noise()


def show(obj) -> None:
    """Display the source of a function or class from the package (notebooks use it to teach)."""
    source = inspect.getsource(obj)
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{source}\n```"))
    except ImportError:
        print(source)
