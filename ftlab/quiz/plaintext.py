r"""Bank text for the terminal: the LaTeX between `$...$` as readable Unicode.

    plain(r"$\Delta W = \frac{\alpha}{r} BA$, $B \in \mathbb{R}^{d \times r}$, $4{,}194{,}304$")
    -> 'Δ W = α/r BA, B ∈ R^(d × r), 4,194,304'

The widget renders the same text with MathJax; a terminal shows characters, so this covers the
macros the banks use (a test runs it over every bank text) and drops the backslash of any other.
An escaped dollar (`\$5`) is a currency sign, in or out of maths.
"""

from __future__ import annotations

import re

SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "theta": "θ", "kappa": "κ",
    "lambda": "λ", "pi": "π", "rho": "ρ", "sigma": "σ", "Delta": "Δ", "ell": "ℓ", "partial": "∂", "sum": "Σ",
    "times": "×", "cdot": "·", "approx": "≈", "le": "≤", "ge": "≥", "ne": "≠", "ll": "≪", "gg": "≫", "pm": "±",
    "propto": "∝", "in": "∈", "to": "→", "leftarrow": "←", "rightarrow": "→", "succ": "≻", "odot": "⊙",
    "mid": "|", "top": "ᵀ", "lVert": "‖", "rVert": "‖", "|": "‖", "lceil": "⌈", "rceil": "⌉",
    "big": "", "Big": "", "left": "", "right": "", "!": "", ",": " ", ";": " ", ":": " ", " ": " ",
}
_TEXT = ("text", "mathrm", "operatorname", "mathbb", "mathcal", "mathbf", "mathit")  # keep the letters
_SUPERSCRIPT = str.maketrans("0123456789+-n", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻ⁿ")
_MATH = re.compile(r"\\\$|\$\$((?:\\.|[^\\$])+)\$\$|\$((?:\\.|[^\\$])+)\$", re.S)


def plain(text: str) -> str:
    """`text` with every `$...$` / `$$...$$` span converted and every `\\$` a plain dollar sign."""
    return _MATH.sub(lambda m: "$" if m.group(0) == "\\$" else
                     re.sub(r" {2,}", " ", _math(m.group(1) or m.group(2))).strip(), text)


def _math(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            part, i = _command(s, i)
        elif c in "^_":
            arg, i = _arg(s, i + 1)
            part = _script(c, arg)
        elif c == "{":
            part, i = _arg(s, i)
        else:
            part, i = ("" if c == "}" else c), i + 1
        out.append(part)
    return "".join(out)


def _command(s: str, i: int) -> tuple[str, int]:
    name = re.match(r"\\([A-Za-z]+|.)", s[i:]).group(1)
    i += 1 + len(name)
    if name in ("frac", "binom"):
        top, i = _arg(s, i)
        bottom, i = _arg(s, i)
        return (f"{_group(top)}/{_group(bottom)}" if name == "frac" else f"C({top}, {bottom})"), i
    if name == "sqrt":
        arg, i = _arg(s, i)
        return "√" + _group(arg), i
    if name == "hat":
        arg, i = _arg(s, i)
        return arg + "\u0302", i  # combining circumflex: Â
    if name in _TEXT:
        return _arg(s, i)
    return SYMBOLS.get(name, name), i  # \% -> %, \$ -> $, an unknown \name -> name


def _arg(s: str, i: int) -> tuple[str, int]:
    """The converted argument at s[i]: a {group}, a \\command or one character (spaces before it skipped)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return "", i
    if s[i] == "\\":
        return _command(s, i)
    if s[i] != "{":
        return s[i], i + 1
    depth, j = 0, i
    while j < len(s):
        depth += {"{": 1, "}": -1}.get(s[j], 0) if s[j - 1:j] != "\\" or j == i else 0
        if depth == 0:
            break
        j += 1
    return _math(s[i + 1:j]), j + 1


def _group(text: str) -> str:
    """A fraction's part, in parentheses unless it is one symbol or number: α/r, (W + BA)/‖W‖."""
    return text if re.fullmatch(r"[\w.ᵀ\u0302]+", text) else f"({text})"


def _script(mark: str, arg: str) -> str:
    if mark == "^" and arg == "ᵀ":
        return arg
    if mark == "^" and arg and arg.translate(_SUPERSCRIPT) != arg and all(c in "0123456789+-n" for c in arg):
        return arg.translate(_SUPERSCRIPT)
    return mark + (arg if re.fullmatch(r"[\w.]+", arg) else f"({arg})")
