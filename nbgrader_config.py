"""nbgrader settings for the ftlab labs (nbgrader 0.9.6, pinned in pyproject.toml's dev extra).

`make grading-course COURSE=DIR` (tools/nbgrader_course.py) makes an nbgrader course folder: this file and
source/NN_topic_lab/NN_topic_lab.ipynb for each lab, copied from solutions/ (tools/make_labs.py gives them
nbgrader's cell metadata). Then, inside DIR, with the course's virtual environment's bin/ on PATH (nbgrader
runs alembic as a subprocess):

    nbgrader generate_assignment 03_lora_lab    # release/: the lab as learners get it (labs/ holds the same)
    nbgrader autograde 03_lora_lab              # grades submitted/STUDENT/03_lora_lab/

Under nbgrader every `grading.check` is strict (ftlab.grading reads NBGRADER_EXECUTION): a check that does not
pass fails its locked cell, which scores 0 of its 1 point.
"""

import os

c = get_config()  # noqa: F821 - nbgrader defines get_config when it reads this file

# Grading needs the same offline set-up as the course. The checks compare a learner's functions with the
# references on fixed cases; the ci profile's tiny models run the same code paths in seconds, so a cohort
# grades in minutes. Set FTLAB_PROFILE=cpu before running nbgrader to grade on the packaged real models.
os.environ.setdefault("FTLAB_PROFILE", "ci")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

# nbgrader stops a cell after 30 s by default. Under FTLAB_PROFILE=cpu a lab's first SmolLM2 load converts the
# packaged GGUF (about 30 s on a laptop, more on a busy grading server) and some cells train for a minute, so
# give every cell 10 minutes; the kernel gets 2 minutes to start (it imports torch).
c.Execute.timeout = 600
c.Execute.startup_timeout = 120

# The stubs tools/make_labs.py writes into labs/, so nbgrader's release equals labs/.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
