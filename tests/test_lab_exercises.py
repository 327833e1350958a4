"""Each rebuilt lab's graded checks can fail: a plausible wrong answer to an exercise fails its check under
strict grading (FTLAB_GRADE=1), while the worked solution passes it.

The lab's own cells run in one namespace, as a kernel would: the setup cell once, then for every mistake the
solution cell with that one change made, then the check cell. A check that passed a wrong answer would be a
point for nothing in nbgrader.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

# lab -> [(exercise, the text of the worked answer, a plausible mistake in its place)]
MISTAKES = {
    "01_fundamentals_lab": [
        ("frozen_features", "out.append(((hidden * mask).sum(1) / mask.sum(1)).float())",
         "out.append(hidden.mean(1).float())"),  # padding counted in the mean
        ("frozen_features", "model.eval()", "pass"),  # dropout left on
        ("fit_probe", "0.5 * l2 * (w * w).sum()", "0.5 * l2 * ((w * w).sum() + (b * b).sum())"),  # bias penalised
    ],
    "03_lora_lab": [
        ("lora_init", "nn.init.zeros_(self.lora_B.weight)",
         "nn.init.kaiming_uniform_(self.lora_B.weight, a=math.sqrt(5))"),  # both random: a fresh layer != base
        ("lora_init", "alpha / math.sqrt(r) if use_rslora else alpha / r", "alpha / r"),  # rsLoRA ignored
    ],
    "04_qlora_nf4_lab": [
        ("double_quantize_absmax", "offset = absmax.mean()", "offset = absmax.new_zeros(())"),  # half the code unused
        ("linear4bit", "ctx.layer = layer ",
         "ctx.save_for_backward(layer.dequantized_weight(x.dtype))\n        ctx.layer = layer "),  # keeps W alive
    ],
    "09_evaluation_lab": [
        ("gathered_delta", "A, B = lora_A[ids], lora_B[ids]",
         "A, B = lora_A[ids[:1]].expand(len(ids), -1, -1), lora_B[ids[:1]].expand(len(ids), -1, -1)"),
        ("mcnemar_exact", "min(1.0, 2 * tail)", "min(1.0, tail)"),  # one-sided
    ],
    "10_choosing_a_method_lab": [
        ("training_flops", '{"full": 4.0, "lora": 2.0, "qlora": 2.0}', '{"full": 4.0, "lora": 4.0, "qlora": 4.0}'),
        ("request_latency", "prefill = max(arithmetic, read_weights) if prompt_tokens else 0.0",
         "prefill = arithmetic"),  # a short prompt is not free: it still reads every weight
    ],
}


def code_cells(lab: str) -> list[str]:
    nb = nbformat.read(ROOT / "solutions" / f"{lab}.ipynb", as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def solution_and_check(cells: list[str], name: str) -> tuple[str, str]:
    """The cell that defines `name` (between solution markers) and the cell that grades it."""
    solution = [c for c in cells if "### BEGIN SOLUTION" in c and re.search(rf"^def {name}\(", c, re.MULTILINE)]
    check = [c for c in cells if re.search(rf"""grading\.(check|evaluate)\(\s*["']{name}["']""", c)]
    assert len(solution) == 1 and len(check) == 1, f"{name}: {len(solution)} solution and {len(check)} check cells"
    return solution[0], check[0]


@pytest.mark.parametrize("lab", sorted(MISTAKES))
def test_a_plausible_mistake_fails_its_check_and_the_solution_passes(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FTLAB_GRADE", "1")
    monkeypatch.setenv("FTLAB_PROFILE", "ci")
    cells = code_cells(lab)
    namespace: dict = {}
    exec(compile(cells[0], f"<{lab} setup>", "exec"), namespace)
    for name, right, wrong in MISTAKES[lab]:
        solution, check = solution_and_check(cells, name)
        assert right in solution, f"{lab}: the worked answer of {name} no longer contains {right!r}"
        exec(compile(solution.replace(right, wrong, 1), f"<{lab} {name}, mistaken>", "exec"), namespace)
        with pytest.raises(AssertionError, match=rf"\[FAIL\] {name}:"):
            exec(compile(check, f"<{lab} check {name}>", "exec"), namespace)
    for name in dict.fromkeys(name for name, _, _ in MISTAKES[lab]):
        solution, check = solution_and_check(cells, name)
        exec(compile(solution, f"<{lab} {name}>", "exec"), namespace)
        exec(compile(check, f"<{lab} check {name}>", "exec"), namespace)  # strict: raises unless it passes
