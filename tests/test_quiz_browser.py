"""`make lab` and the quiz widget in a real JupyterLab, driven by headless Chromium (Debian's `chromium` + playwright).

The server is started by the Makefile's own `lab` recipe (setup skipped with `make -o setup`) on a free port,
with a throwaway working copy under build/ and throwaway FTLAB_HOME, Jupyter runtime, data, settings and
workspace folders; every JupyterLab setting but the news toast keeps its default (comm messages arrive on a kernel
subshell thread, autosave is on). The tests check that the repository is served (labs, solutions and the
practice notebook open), that the URL the server prints opens the working copy of chapter 00, then take a
whole 5-question test to the end card, answering each kind of question as it comes, and follow a "Read" link
in the middle of it: the chapter opens at its section in the same JupyterLab and the quiz stays alive.
Screenshots go to tests/artifacts/ (git-ignored). Without chromium or playwright the browser test is skipped,
except under CI, where it fails.
"""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ftlab.quiz.session import Session
from ftlab.quiz.store import Store

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import workspace  # noqa: E402

ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
ANSWER = ("LoRA freezes the pretrained weight and trains two small low-rank matrices whose product is added to it, "
          "so far fewer parameters need gradients and optimizer state.")


def need(condition: bool, why: str):
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running `make lab`: its printed URL, token, working copy, learner data and Jupyter data folders."""

    def __init__(self, url: str, token: str, opened: str, work: str, home: Path, jupyter_data: Path):
        self.url, self.token, self.opened, self.work = url, token, opened, work
        self.home, self.jupyter_data = home, jupyter_data

    def get(self, path: str) -> tuple[int, dict]:
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as e:
            return e.code, {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab PORT=… WORK=build/browser-<pid>/my`, stopped through its process group; the copy is removed."""
    tmp = tmp_path_factory.mktemp("lab")
    scratch = REPO / "build" / f"browser-{os.getpid()}"
    work = f"{scratch.relative_to(REPO)}/my"
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no news toast
    port = free_port()
    env = {**os.environ, "FTLAB_HOME": str(tmp / "home"), "FTLAB_LEARNER": "browser", "FTLAB_PROFILE": "ci",
           "HF_HUB_OFFLINE": "1", "JUPYTER_RUNTIME_DIR": str(tmp / "rt"), "JUPYTER_DATA_DIR": str(tmp / "data"),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "ws"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings")}
    for display in ("DISPLAY", "WAYLAND_DISPLAY"):  # as on a server: make lab must not try to open a browser
        env.pop(display, None)
    log_path = tmp / "make-lab.log"
    log = open(log_path, "w")
    server = subprocess.Popen(["make", "-s", "-o", "setup", "lab", f"PORT={port}", f"WORK={work}"], cwd=REPO,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    printed = re.compile(rf"http://127\.0\.0\.1:{port}(/lab/tree/\S+)\?token=(\w+)")
    try:
        deadline = time.time() + 120
        while not (found := printed.search(log_path.read_text())):
            if server.poll() is not None or time.time() > deadline:
                pytest.fail("make lab did not print its URL:\n" + log_path.read_text()[-3000:])
            time.sleep(0.3)
        yield Lab(f"http://127.0.0.1:{port}", found[2], found[1], work, tmp / "home", tmp / "data")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make, JupyterLab and its kernels share the group
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


def test_make_lab_serves_the_repository_and_prints_the_working_copy_of_chapter_00(lab):
    assert lab.opened == f"/lab/tree/{lab.work}/chapters/00_setup.ipynb"
    for path in ("labs/03_lora_lab.ipynb", "solutions/03_lora_lab.ipynb", "quizzes/practice.ipynb",
                 f"{lab.work}/labs/03_lora_lab.ipynb", f"{lab.work}/quizzes/practice.ipynb",
                 f"{lab.work}/chapters/00_setup.ipynb"):
        assert lab.get(f"/api/contents/{path}?content=0")[0] == 200, path
    # The copies come signed, so their quiz links open chapters without a "Run Command?" question.
    status, copy = lab.get(f"/api/contents/{lab.work}/chapters/03_lora.ipynb")
    assert status == 200 and all(c["metadata"]["trusted"] for c in copy["content"]["cells"] if c["cell_type"] == "code")


@pytest.fixture
def playwright_api():
    """playwright's sync API, checked before the browser starts: skip (or fail under CI) without the tools."""
    need(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        need(False, "Python playwright is not installed (pip install -e '.[browser]')")
    return sync_api


def seed_reading_far_down(tmp: Path) -> int:
    """A seed whose first chapter-02 question (fresh learner) points at a section well below the chapter's first
    screen, so that landing on it shows the link scrolled the chapter. (Chapter 02 stores cell ids, so its
    links name the heading's cell, which JupyterLab finds in a notebook it has only just opened.)"""
    cells = json.loads((REPO / "chapters" / "02_small_hardware.ipynb").read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FTLAB_HOME", str(tmp / "probe"))
        for seed in range(100):
            item = Session("quiz", store=Store("probe"), chapters=["02"], seed=seed).next_item()
            heading = re.compile(rf"^#+ {re.escape(item.section)}\s*$", re.M)
            if next(i for i, source in enumerate(sources) if heading.search(source)) >= 5:
                return seed
    pytest.fail("no seed gives a first chapter-02 question that links far into the chapter")


def shown_notebook(page):
    """The notebook in the current main-area tab (JupyterLab keeps the others in the page, scaled to nothing)."""
    return page.locator(".jp-NotebookPanel").filter(visible=True)


def answer_current(quiz, expect, number: int) -> str:
    """Answer question `number` with whatever input it shows; return its kind as the page sees it."""
    expect(quiz.locator(".widget-htmlmath", has_text=f"Question {number} of 5")).to_have_count(1, timeout=30_000)
    live = quiz.locator(".widget-radio-box input:enabled, .widget-checkbox input:enabled, "
                        ".widget-text input:enabled, textarea:enabled").first
    live.wait_for(timeout=30_000)
    kind = live.evaluate("e => e.type")
    if kind in ("radio", "checkbox"):
        live.check()
    elif kind == "text":
        live.fill("1")
    else:
        live.fill(ANSWER)
    quiz.locator("button.jupyter-button", has_text="Submit").click()
    expect(quiz.locator(".ftlab-feedback")).to_be_visible(timeout=60_000)  # free text loads MiniLM first
    if kind == "textarea":
        quiz.locator("button.jupyter-button", has_text="Good").click()
        expect(quiz.locator(".ftlab-feedback")).to_contain_text("Rated Good", timeout=30_000)
    return kind


def follow_read_link(page, quiz, expect, lab: Lab):
    """Click the feedback's Read link: the chapter's working copy opens at the section, the page is not reloaded,
    and the quiz tab still holds the live widget."""
    link = quiz.locator(".ftlab-feedback a[data-commandlinker-command]").first
    args = json.loads(link.get_attribute("data-commandlinker-args"))
    assert args["path"].startswith(f"{lab.work}/chapters/"), args  # the kernel runs in the working copy
    assert args["id"].startswith("#cell-id=") and link.get_attribute("target") == "_blank"
    anchor = link.get_attribute("href").split("#")[1]  # the heading's own anchor, for other frontends
    page.evaluate("window.ftlabNotReloaded = true")
    link.click()
    chapter = shown_notebook(page)
    expect(page.locator(".lm-TabBar-tab.jp-mod-current")).to_contain_text(Path(args["path"]).name, timeout=60_000)
    expect(chapter.locator(f'[data-jupyter-id="{anchor}"]')).to_be_in_viewport(timeout=30_000)
    assert chapter.locator(".jp-WindowedPanel-outer").evaluate("e => e.scrollTop") > 0  # scrolled, not the top
    assert page.locator(".jp-Dialog").count() == 0  # no "Run Command?" question on the way
    page.screenshot(path=str(ARTIFACTS / "quiz_browser_read_link.png"))
    assert page.evaluate("window.ftlabNotReloaded") is True
    page.locator(".lm-TabBar-tab", has_text="quiz_browser.ipynb").click()
    expect(quiz.locator(".ftlab-feedback")).to_be_visible()


def test_whole_quiz_in_make_lab(playwright_api, lab, tmp_path, monkeypatch):
    expect, sync_playwright = playwright_api.expect, playwright_api.sync_playwright
    # Like a chapter's copy: signed as make lab signs copies, and run only in part (a learner who goes straight
    # to the quiz), so the notebook is trusted through its signature, not through having run every cell.
    seed = seed_reading_far_down(tmp_path)
    quiz_cell = f'from ftlab.quiz import Quiz\nQuiz(chapter="02", learner="browser", seed={seed})'
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": src}
             for i, src in enumerate([quiz_cell, 'print("a cell this test does not run")'])]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}}
    path = REPO / lab.work / "chapters" / "quiz_browser.ipynb"
    path.write_text(json.dumps(notebook))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(lab.jupyter_data))
    workspace.trust([path])
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{lab.url}{lab.opened}?token={lab.token}", timeout=90_000)  # what make lab printed
            expect(page.locator(".lm-TabBar-tab.jp-mod-current")).to_contain_text("00_setup.ipynb", timeout=90_000)
            expect(shown_notebook(page).locator("h1").first).to_contain_text("Setup and tour")
            page.screenshot(path=str(ARTIFACTS / "make_lab_opened.png"))

            page.goto(f"{lab.url}/lab/tree/{lab.work}/chapters/quiz_browser.ipynb", timeout=90_000)
            expect(page.locator(".lm-TabBar-tab.jp-mod-current")).to_contain_text("quiz_browser.ipynb", timeout=90_000)
            shown_notebook(page).locator(".jp-Cell .cm-content").first.click(timeout=90_000)
            # The status bar speaks for the current notebook and says Idle once its kernel is connected (a cell
            # run before that is dropped without a word; the toolbar's indicator reads idle from the start).
            expect(page.locator("#jp-main-statusbar")).to_contain_text("Python 3 (ipykernel) | Idle", timeout=90_000)
            page.keyboard.press("Shift+Enter")
            quiz = page.locator(".ftlab-quiz")
            kinds = []
            for number in range(1, 6):
                kinds.append(answer_current(quiz, expect, number))
                page.screenshot(path=str(ARTIFACTS / f"quiz_browser_q{number}.png"))
                if number == 1:
                    follow_read_link(page, quiz, expect, lab)
                quiz.locator("button.jupyter-button", has_text=re.compile(r"^(Next|Finish)$")).click()
            expect(quiz.locator(".ftlab-end")).to_contain_text("Result:", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "quiz_browser_end.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "quiz_browser_failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    with sqlite3.connect(lab.home / "progress" / "browser.sqlite") as conn:
        rows = conn.execute("SELECT item_id FROM answers").fetchall()
    assert len(rows) == 5 and len(set(rows)) == 5, (rows, kinds)
