"""The quiz widget in a real JupyterLab, driven by headless Chromium (Debian's `chromium` + Python playwright).

Starts JupyterLab on a free port in a temporary folder, opens a one-cell notebook that shows
`Quiz(...)`, runs it, clicks the right option and Submit, and checks that the feedback appears
on the page and that the answer is in the learner's SQLite store. A screenshot goes to
tests/artifacts/ (git-ignored). Without chromium the test is skipped, except under CI, where it fails.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ftlab.quiz.session import Session
from ftlab.quiz.store import Store

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def need(condition: bool, why: str):
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_single_choice_seed(home: Path) -> tuple[int, object]:
    """A seed whose first chapter-02 question (fresh learner) is single-choice, so one click answers it."""
    os.environ["FTLAB_HOME"] = str(home / "probe")
    try:
        for seed in range(100):
            item = Session("quiz", store=Store("probe"), chapters=["02"], seed=seed).next_item()
            if item.kind == "single":
                return seed, item
    finally:
        del os.environ["FTLAB_HOME"]
    pytest.fail("no seed gives a single-choice first question in chapter 02")


@pytest.fixture
def playwright_api():
    """playwright's sync API, checked before any server starts: skip (or fail under CI) without the tools."""
    need(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        need(False, "Python playwright is not installed (pip install -e '.[browser]')")
    return sync_api


@pytest.fixture
def lab(playwright_api, tmp_path):
    """A JupyterLab server over tmp_path/lab with FTLAB_HOME inside tmp_path; stopped by its PID."""
    root, home = tmp_path / "lab", tmp_path / "home"
    root.mkdir()
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no news toast
    port = free_port()
    env = {**os.environ, "FTLAB_HOME": str(home), "FTLAB_LEARNER": "browser", "PYTHONPATH": str(REPO),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "FTLAB_PROFILE": "ci"}
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.token=",
                               "--ServerApp.password=", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                               f"--ServerApp.root_dir={root}",
                               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyter.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, root, home
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the kernel it started goes too
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def test_quiz_widget_in_jupyterlab(playwright_api, lab, tmp_path):
    expect, sync_playwright = playwright_api.expect, playwright_api.sync_playwright
    url, root, home = lab
    seed, item = first_single_choice_seed(tmp_path)
    source = f'from ftlab.quiz import Quiz\nQuiz(chapter="02", learner="browser", seed={seed})'
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}],
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5}
    (root / "quiz.ipynb").write_text(json.dumps(notebook))
    right = next(c.text for c in item.choices if c.id == item.answer)
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/quiz.ipynb", timeout=90_000)
            page.locator(".jp-Notebook .jp-Cell .cm-content").first.click(timeout=90_000)
            expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=90_000)
            page.keyboard.press("Shift+Enter")
            option = page.locator(".widget-radio-box label", has_text=right)
            option.click(timeout=90_000)
            page.locator("button.jupyter-button", has_text="Submit").click()
            feedback = page.locator(".ftlab-feedback")
            expect(feedback).to_contain_text("Correct.", timeout=30_000)
            expect(feedback).to_contain_text(item.explanation.split(".")[0][:40])
            page.screenshot(path=str(ARTIFACTS / "quiz_browser.png"), full_page=True)
            # Keyboard: the focused Next button answers to Enter like any native button.
            page.locator("button.jupyter-button", has_text="Next").focus()
            page.keyboard.press("Enter")
            expect(page.locator(".widget-htmlmath", has_text="Question 2 of 5")).to_have_count(1, timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "quiz_browser_question2.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "quiz_browser_failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    with sqlite3.connect(home / "progress" / "browser.sqlite") as conn:
        rows = conn.execute("SELECT item_id, correct FROM answers").fetchall()
    assert rows == [(item.id, 1)]
