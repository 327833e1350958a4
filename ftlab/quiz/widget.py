"""The quiz in a notebook: one line shows it.

    from ftlab.quiz import Quiz; Quiz(chapter="02")

Everything the learner sees lives in widget *values* (HTML strings, progress numbers), not in an
`Output` area, so tests can drive it from Python and read what a learner would read. Keyboard
use comes from native controls: Tab moves between options and buttons, arrow keys move within
the radio group, Space/Enter press the focused button.
"""

from __future__ import annotations

import html
import re
import sqlite3

import ipywidgets as widgets

from .bank import BankError
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
</style>"""


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
    from .adaptive import Ability

    return f"{Ability.mastery(theta):.0%}"


def feedback_html(fb) -> str:
    colour = "#1a7f37" if fb.correct else "#b35900"
    parts = [f'<div class="ftlab-feedback"><p style="color:{colour}"><b>{html.escape(fb.headline)}</b></p>']
    if fb.options:
        rows = []
        for choice, picked, is_answer in fb.options:
            mark = "✔" if is_answer else "✘"
            who = " <i>(your pick)</i>" if picked else ""
            rows.append(f"<li>{mark} <b>{html.escape(choice.text)}</b>{who}<br>{markdown(choice.feedback)}</li>")
        parts.append("<ul>" + "".join(rows) + "</ul>")
    if fb.hits or fb.misses:
        parts.append("<p>Key points you made:</p><ul>" + "".join(f"<li>✔ {html.escape(k)}</li>" for k in fb.hits)
                     + "".join(f"<li>✘ <i>missed:</i> {html.escape(k)}</li>" for k in fb.misses) + "</ul>")
        parts.append(f"<p><b>Model answer.</b></p>{markdown(fb.model_answer)}")
        parts.append("<p>How well did you know it? Rate yourself below (it schedules the next review).</p>")
    parts.append(f"<p><b>Why.</b></p>{markdown(fb.explanation)}")
    parts.append(f'<p>Read: <a href="{link(fb.see)}">{html.escape(fb.section)}</a> ({fb.see.split("#")[0]})</p></div>')
    return "".join(parts)


class Quiz(widgets.VBox):
    """An adaptive test of `n` questions for a chapter (or for all chapters when chapter is None).

    mode: "quiz" (adaptive), "practice" (adaptive, all chapters), "daily", "review".
    """

    def __init__(self, chapter=None, learner: str | None = None, topics=None, seed: int | None = None, n: int = 5,
                 mode: str = "quiz", **session_args):
        super().__init__()
        self.add_class("ftlab-quiz")
        chapters = None if chapter is None else [f"{int(c):02d}" for c in ([chapter] if isinstance(chapter, (str, int))
                                                                            else chapter)]
        self._args = dict(mode=mode, learner=learner, chapters=chapters, topics=topics, n=n, **session_args)
        self._seed = seed
        self.title = widgets.HTML()
        self.progress = widgets.IntProgress(min=0, max=n, description="Progress")
        self.ability = widgets.HTML()
        self.question = widgets.HTMLMath()
        self.answer_box = widgets.VBox()
        self.submit = widgets.Button(description="Submit", button_style="primary", tooltip="Check your answer")
        self.next = widgets.Button(description="Next", tooltip="Next question", disabled=True)
        self.feedback = widgets.HTMLMath()  # its .value is what the learner reads after Submit
        self.ratings = widgets.HBox([widgets.Button(description=r, tooltip=f"I found it: {r.lower()}")
                                     for r in ("Again", "Hard", "Good", "Easy")])
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
        label = {"quiz": f"Chapter {', '.join(self._args['chapters'] or ['all'])} quiz", "practice": "Practice",
                 "daily": "Daily challenge", "review": "Review queue"}[s.mode]
        self.title.value = (f"<h3>{label}</h3><small>learner <b>{html.escape(s.learner)}</b>, {s.saved_answers} "
                            f"answers saved so far in <code>{html.escape(str(s.store.path))}</code></small>")
        self.progress.max = max(1, s.total)
        self.children = [widgets.HTML(_STYLE), self.title, widgets.HBox([self.progress, self.ability]), self.question,
                         self.answer_box,
                         widgets.HBox([self.submit, self.next]), self.feedback]
        self._show_question()

    def _show_question(self):
        s = self.session
        item = s.next_item()
        self.progress.value = s.answered
        self._show_ability()
        self.feedback.value = ""
        if item is None:
            return self._show_end()
        self.question.value = (f"<p><b>Question {s.answered + 1} of {s.total}</b> · difficulty "
                               f"{'●' * item.difficulty}{'○' * (5 - item.difficulty)} · {', '.join(item.topics)}</p>"
                               + markdown(item.prompt))
        if item.kind == "single":
            self.input = widgets.RadioButtons(options=[(c.text, c.id) for c in item.choices], value=None,
                                              layout=widgets.Layout(width="auto"))
            self.answer_box.children = [self.input]
        elif item.kind == "multi":
            self.input = [widgets.Checkbox(description=c.text, indent=False, layout=widgets.Layout(width="auto"))
                          for c in item.choices]
            self.answer_box.children = self.input
        elif item.kind == "numeric":
            self.input = widgets.Text(placeholder=f"a number, in {item.unit}", description="Answer")
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
            return [c.id for c, box in zip(item.choices, self.input) if box.value]
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
        self.feedback.value = feedback_html(fb)
        self.progress.value = self.session.answered
        self._show_ability()
        if fb.needs_rating:
            self.children = [*self.children, self.ratings]

    def _on_rate(self, button):
        self.session.rate(button.description)
        self.children = [c for c in self.children if c is not self.ratings]
        self.feedback.value += f"<p><i>Rated {button.description}: the next review is scheduled from that.</i></p>"

    def _on_next(self, _=None):
        if self.session.done and self.session.item is None:
            return self._start()  # the end card's button: another test
        self.children = [c for c in self.children if c is not self.ratings]
        self._show_question()

    # -- display ----------------------------------------------------------------------------------
    def _show_ability(self):
        s = self.session
        trail = " → ".join(f"{t:+.2f}" for t in s.test.trace[-6:])
        item = s.item or (s.test.asked[-1] if s.test.asked else None)
        topic = ""
        if item is not None:
            theta = s.ability.of(item.topics)
            topic = f" · on {', '.join(item.topics)}: {theta:+.2f} ({_pct(theta)})"
        self.ability.value = (f'<span class="ftlab-ability">ability θ {trail} (mastery {_pct(s.ability.overall)})'
                              f"{topic}</span>")

    def _show_end(self):
        s = self.session
        if s.total == 0:
            self.question.value = "<p><b>Nothing due for review right now.</b> Take a quiz or the daily challenge.</p>"
            self.answer_box.children, self.submit.disabled, self.next.disabled = [], True, True
            return
        r = s.summary()
        topics = "".join(f"<li>{html.escape(t)}: θ {v:+.2f}, mastery {_pct(v)}</li>" for t, v in r["topics"].items())
        weak = ", ".join(html.escape(t) for t in r["weak"]) or "none this time"
        read = "".join(f'<li><a href="{link(see)}">{html.escape(sec)}</a></li>' for see, sec in r["read"].items())
        self.question.value = (f'<div class="ftlab-end"><h4>Result: {r["correct"]} of {r["asked"]} correct</h4>'
                               f'<p>Ability θ {r["before"]:+.2f} → {r["after"]:+.2f}</p><ul>{topics}</ul>'
                               f"<p><b>Weak topics:</b> {weak}</p>" + (f"<p>Read again:</p><ul>{read}</ul>" if read else "")
                               + "</div>")
        self.answer_box.children = []
        self.submit.disabled, self.next.disabled, self.next.description = True, False, "Another test"


def Practice(learner: str | None = None, **kwargs) -> Quiz:
    """Adaptive practice over every chapter's bank."""
    return Quiz(chapter=None, learner=learner, mode="practice", **kwargs)


def Daily(learner: str | None = None, **kwargs) -> Quiz:
    """Today's challenge: the same questions all day, mixing due reviews and weak topics."""
    return Quiz(chapter=None, learner=learner, mode="daily", **kwargs)


def Review(learner: str | None = None, **kwargs) -> Quiz:
    """The questions FSRS says are due now."""
    return Quiz(chapter=None, learner=learner, mode="review", **kwargs)
