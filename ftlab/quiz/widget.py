"""The quiz in a notebook: one line shows it.

    from ftlab.quiz import Quiz; Quiz(chapter="02")

Everything the learner sees lives in widget *values* (HTML strings, progress numbers), not in an
`Output` area, so tests can drive it from Python and read what a learner would read. Keyboard
use comes from native controls: Tab reaches every option and button in turn, Space picks the
focused option (or ticks it), Enter or Space presses the focused button. Arrow keys do not move
between options: each ipywidgets radio is its own input, and in JupyterLab the notebook takes the
arrows to move between cells.
"""

from __future__ import annotations

import html
import re
import sqlite3

import ipywidgets as widgets

from .adaptive import Ability
from .bank import BankError, ordered_choices
from .session import Session, link
from .store import StoreError

_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$", re.S)
# ipywidgets sizes radio and checkbox labels for one short line; answer options are sentences.
# A radio label holds its text first and its input second (hence row-reverse); a checkbox label
# holds the input first.
_STYLE = """<style>
.ftlab-quiz .widget-radio-box label, .ftlab-quiz .widget-checkbox label {
  height: auto !important; line-height: 1.35; white-space: normal; margin: 2px 0 6px 0;
  display: flex; justify-content: flex-end; align-items: flex-start; gap: 4px; }
.ftlab-quiz .widget-radio-box label { flex-direction: row-reverse; }
.ftlab-quiz .widget-checkbox label { flex-direction: row; justify-content: flex-start; }
.ftlab-quiz .widget-checkbox { height: auto !important; }
.ftlab-quiz a { text-decoration: underline; }
.ftlab-quiz .ftlab-ability { line-height: 1.4; white-space: normal; }
</style>"""
THETA_HELP = ("θ is the ability estimate in logits (item response theory): 0 is average for this question bank, "
              "+1 strong, −1 weak. Mastery is the estimated chance of getting a middle-difficulty (3 of 5) "
              "question right.")
GREEN, ORANGE, NEUTRAL = "#1a7f37", "#b35900", "#444"


def markdown(text: str) -> str:
    """Markdown to HTML with $...$ and $$...$$ left intact for MathJax (Markdown would eat `_` and `*`)."""
    import mistune  # ships with JupyterLab (via nbconvert)

    maths = []

    def stash(m):
        maths.append(html.escape(m.group(0), quote=False))
        return f"MATHSTASH{len(maths) - 1}X"

    rendered = mistune.html(_MATH.sub(stash, text))
    return re.sub(r"MATHSTASH(\d+)X", lambda m: maths[int(m.group(1))], rendered)


def _pct(theta: float) -> str:
    return f"{Ability.mastery(theta):.0%}"


def _plural(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def option_mark(picked: bool, is_answer: bool, multi: bool) -> str:
    """What a choice was and what the learner did with it: ✔/✘ alone read as 'you were right/wrong'."""
    if is_answer:
        did = " · your pick" if picked else (" (missed)" if multi else "")
        return f'<span style="color:{GREEN}">✔ correct answer{did}</span>'
    return f'<span style="color:{ORANGE}">✘ wrong answer{" · your pick" if picked else ""}</span>'


def feedback_html(fb, kind: str) -> str:
    """The verdict: per-option feedback, or key points and the model answer. Free text gets a neutral
    colour: key-point coverage is not correctness."""
    colour = NEUTRAL if kind == "free_text" else GREEN if fb.correct else ORANGE
    parts = [f'<div><p style="color:{colour}"><b>{html.escape(fb.headline)}</b></p>']
    if fb.options:
        rows = [f"<li>{option_mark(picked, is_answer, kind == 'multi')}: <b>{html.escape(choice.text)}</b><br>"
                f"{markdown(choice.feedback)}</li>" for choice, picked, is_answer in fb.options]
        parts.append("<ul>" + "".join(rows) + "</ul>")
    if kind == "free_text":
        parts.append("<ul>" + "".join(f"<li>✔ <i>covered:</i> {html.escape(k)}</li>" for k in fb.hits)
                     + "".join(f"<li>✘ <i>missed:</i> {html.escape(k)}</li>" for k in fb.misses) + "</ul>")
        parts.append(f"<p><b>Model answer.</b></p>{markdown(fb.model_answer)}")
        parts.append("<p>How well did you know it? Rate yourself with the buttons below; your rating schedules the "
                     "next review.</p>")
    return "".join(parts) + "</div>"


def why_html(fb) -> str:
    """The explanation and where the chapter teaches it."""
    parts = [f"<div><p><b>Why.</b></p>{markdown(fb.explanation)}"]
    parts.append(f'<p>Read: {link(fb.see, html.escape(fb.section))} ({fb.see.split("#")[0]})</p></div>')
    return "".join(parts)


class Quiz(widgets.VBox):
    """An adaptive test of `n` questions for a chapter (or for all chapters when chapter is None).

    mode: "quiz" (adaptive), "practice" (adaptive, the chapters reached unless `chapter` is given), "daily", "review".
    A bad argument (chapter="abc", n=-2) shows a "could not start" card that names it, instead of raising.
    """

    def __init__(self, chapter=None, learner: str | None = None, topics=None, seed: int | None = None, n: int = 5,
                 mode: str = "quiz", **session_args):
        super().__init__()
        self.add_class("ftlab-quiz")
        # Arguments are checked by Session, inside _start, so a bad one shows the "could not start" card.
        self._args = dict(mode=mode, learner=learner, chapters=chapter, topics=topics, n=n, **session_args)
        self._seed = seed
        self.title = widgets.HTML()
        self.progress = widgets.IntProgress(min=0, max=1, description="Progress")  # max set once n is checked
        self.ability = widgets.HTML()
        self.question = widgets.HTMLMath()
        self.answer_box = widgets.VBox()
        self.submit = widgets.Button(description="Submit", button_style="primary", tooltip="Check your answer")
        self.next = widgets.Button(description="Next", tooltip="Next question", disabled=True)
        self.buttons = widgets.HBox([self.submit, self.next])
        self.feedback = widgets.HTMLMath()  # its .value is what the learner reads after Submit: the verdict
        self.why = widgets.HTMLMath()  # then the explanation and the link to the chapter
        self.ratings = widgets.HBox([widgets.Button(description=r, tooltip=f"I found it: {r.lower()}")
                                     for r in ("Again", "Hard", "Good", "Easy")])
        # Free text puts the rating buttons between the verdict and the explanation; see _on_submit. The box
        # carries the class ftlab-feedback only while it shows graded feedback (the browser test waits for it).
        self.feedback_box = widgets.VBox([self.feedback, self.why])
        self.submit.on_click(self._on_submit)
        self.next.on_click(self._on_next)
        for b in self.ratings.children:
            b.on_click(self._on_rate)
        self._start()

    # -- flow -----------------------------------------------------------------------------------
    def _start(self):
        try:
            self.session = Session(seed=self._seed, **self._args)
        except (BankError, StoreError, ValueError, sqlite3.Error) as e:
            self.session = None
            self.children = [widgets.HTML(f'<div class="ftlab-error"><b>The quiz could not start.</b>'
                                          f'<pre>{html.escape(str(e))}</pre></div>')]
            return
        s = self.session
        if self._seed is not None:
            self._seed += 1  # "another test" under a seed is a different but still reproducible one
        self.progress.max = max(1, s.total)
        self.buttons.children = [self.submit, self.next]
        self._show_title()
        self.children = [widgets.HTML(_STYLE), self.title, self.progress, self.ability, self.question,
                         self.answer_box, self.buttons, self.feedback_box]
        self._show_question()

    def _show_title(self):
        s = self.session
        chapters = f"{s.chapters[0]}–{s.chapters[-1]}" if len(s.chapters) > 1 else s.chapters[0]
        if s.mode == "quiz":
            label = f"Chapter {', '.join(s.chapters)} quiz" if len(s.chapters) <= 3 else f"Chapters {chapters} quiz"
        else:
            label = {"practice": f"Practice: chapters {chapters}", "daily": "Daily challenge",
                     "review": "Review queue"}[s.mode]
        self.title.value = (f"<h3>{label}</h3><small>learner <b>{html.escape(s.learner)}</b>, "
                            f"{_plural(s.stored_answers(), 'answer')} saved so far in "
                            f"<code>{html.escape(str(s.store.path))}</code></small>")

    def _show_question(self):
        s = self.session
        item = s.next_item()
        self.progress.value = s.answered
        self._show_ability()
        self.feedback.value = self.why.value = ""
        self.feedback_box.remove_class("ftlab-feedback")
        if item is None:
            return self._show_end()
        chapter = f"Chapter {item.chapter}" + (f" · {html.escape(s.titles[item.chapter])}" if item.chapter in s.titles
                                               else "")
        self.question.value = (f"<p><b>Question {s.answered + 1} of {s.total}</b> · {chapter} · difficulty "
                               f"{'●' * item.difficulty}{'○' * (5 - item.difficulty)} · topic: {', '.join(item.topics)}"
                               "</p>" + markdown(item.prompt))
        self.choices = ordered_choices(item, s.learner) if item.kind in ("single", "multi") else []
        if item.kind == "single":
            self.input = widgets.RadioButtons(options=[(c.text, c.id) for c in self.choices], value=None,
                                              layout=widgets.Layout(width="auto"))
            self.answer_box.children = [self.input]
        elif item.kind == "multi":
            self.input = [widgets.Checkbox(description=c.text, indent=False, layout=widgets.Layout(width="auto"))
                          for c in self.choices]
            self.answer_box.children = self.input
        elif item.kind == "numeric":
            self.input = widgets.Text(placeholder=f"a number ({item.unit})", description="Answer")
            self.answer_box.children = [widgets.HBox([self.input, widgets.Label(item.unit)])]
        else:
            self.input = widgets.Textarea(placeholder="Explain in your own words, as you would in an interview.",
                                          layout=widgets.Layout(width="100%", height="8em"))
            self.answer_box.children = [self.input]
        self.submit.disabled, self.next.disabled = False, True
        self.next.description = "Next" if s.answered + 1 < s.total else "Finish"

    def _response(self):
        item = self.session.item
        if item.kind == "multi":
            return [c.id for c, box in zip(self.choices, self.input) if box.value]
        return self.input.value

    def _on_submit(self, _=None):
        try:
            fb = self.session.submit(self._response())  # committed to the store before we show anything
        except ValueError as e:
            self.feedback.value = f'<p class="ftlab-warning" style="color:#b35900">{html.escape(str(e))}</p>'
            return
        except (StoreError, sqlite3.Error) as e:
            self.feedback.value = (f'<p class="ftlab-error" style="color:#cf222e">Could not save this answer, so it '
                                   f'was not counted: {html.escape(str(e))}</p>')
            return
        except (RuntimeError, OSError) as e:  # e.g. the embedder for free text is not installed
            self.feedback.value = (f'<p class="ftlab-error" style="color:#cf222e">Could not score this answer (nothing '
                                   f'was saved): {html.escape(str(e))}</p>')
            return
        for w in self.input if isinstance(self.input, list) else [self.input]:
            w.disabled = True
        self.submit.disabled, self.next.disabled = True, False
        self.feedback.value = feedback_html(fb, self.session.item.kind)
        self.why.value = why_html(fb)
        self.feedback_box.add_class("ftlab-feedback")
        if fb.needs_rating:
            self.feedback_box.children = [self.feedback, self.ratings, self.why]
        self.progress.value = self.session.answered
        self._show_ability()
        self._show_title()

    def _on_rate(self, button):
        self.session.rate(button.description)
        self.feedback_box.children = [self.feedback, self.why]
        self.feedback.value += f"<p><i>Rated {button.description}: the next review is scheduled from that.</i></p>"

    def _on_next(self, _=None):
        if self.session.done and self.session.item is None:
            return self._start()  # the end card's button: another test
        self.feedback_box.children = [self.feedback, self.why]
        self._show_question()

    # -- display ----------------------------------------------------------------------------------
    def _show_ability(self):
        s = self.session
        help_ = f'class="ftlab-ability" title="{html.escape(THETA_HELP)}"'
        if not s.test.responses:  # the prior, not a result: nothing to show as mastery yet
            self.ability.value = f"<span {help_}>Ability θ (0 = average): estimated from your first answer on.</span>"
            return
        trail = " → ".join(f"{t:+.2f}" for t in s.test.trace[-4:])
        item = s.item or (s.test.asked[-1] if s.test.asked else None)
        topic = ""
        if item is not None:
            theta = s.ability.of(item.topics)
            topic = f" · on {', '.join(item.topics)}: θ {theta:+.2f}, mastery {_pct(theta)}"
        self.ability.value = (f"<span {help_}>Ability θ (0 = average): {trail} · mastery {_pct(s.ability.overall)}"
                              f"{topic}</span>")

    def _show_end(self):
        s = self.session
        if s.total == 0:  # a message, and no buttons that could do nothing
            self.question.value = ("<p><b>Nothing due for review right now.</b> An answer comes back for review "
                                   "a day or more after you give it; meanwhile take a chapter quiz, Practice() "
                                   "or Daily().</p>")
            self.children = [c for c in self.children if c not in (self.progress, self.ability, self.answer_box,
                                                                    self.buttons, self.feedback_box)]
            return
        r = s.summary()
        topics = "".join(f"<li>{html.escape(t)}: θ {v:+.2f}, mastery {_pct(v)}</li>" for t, v in r["topics"].items())
        weak = ", ".join(html.escape(t) for t in r["weak"]) or "none this time"
        read = "".join(f"<li>{link(see, html.escape(sec))}</li>" for see, sec in r["read"].items())
        self.question.value = (f'<div class="ftlab-end"><h4>Result: {html.escape(r["result"])}</h4>'
                               f'<p>Ability θ {r["before"]:+.2f} → {r["after"]:+.2f}</p><ul>{topics}</ul>'
                               f"<p><b>Weak topics:</b> {weak}</p>"
                               + (f"<p>Read again:</p><ul>{read}</ul>" if read else "")
                               + "</div>")
        self.answer_box.children = []
        self.buttons.children = [self.next]  # Submit has nothing left to submit
        self.next.disabled, self.next.description = False, "Another test"


def Practice(learner: str | None = None, chapter=None, **kwargs) -> Quiz:
    """Adaptive practice over the chapters you have reached (every one up to the highest you have answered a
    question of; 00-01 at first), or over `chapter` (a number or a list) when given."""
    return Quiz(chapter=chapter, learner=learner, mode="practice", **kwargs)


def Daily(learner: str | None = None, **kwargs) -> Quiz:
    """Today's challenge: the same questions all day, mixing due reviews and weak topics."""
    return Quiz(chapter=None, learner=learner, mode="daily", **kwargs)


def Review(learner: str | None = None, **kwargs) -> Quiz:
    """The questions FSRS says are due now."""
    return Quiz(chapter=None, learner=learner, mode="review", **kwargs)
