"""Fixtures shared by the quiz and lab-progress tests."""

import pytest

from ftlab.quiz import bank


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A throwaway FTLAB_HOME, so progress stores written by a test never touch a real one. Modules that
    need it for every test say `pytestmark = pytest.mark.usefixtures("home")`; the notebook tests keep
    build/home, where the converted SmolLM2 is cached."""
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def bank_items():
    """Every item of the course's question bank, loaded once."""
    return bank.load_banks()
