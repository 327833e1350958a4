"""ftlab: LLM fine-tuning built from scratch and proven against the libraries industry uses."""

from __future__ import annotations

import inspect

__version__ = "0.1.0"


def show(obj) -> None:
    """Display the source of a function or class from the package (notebooks use it to teach)."""
    source = inspect.getsource(obj)
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{source}\n```"))
    except ImportError:
        print(source)
