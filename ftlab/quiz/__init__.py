"""Adaptive quizzes: banks, ability model, spaced review, progress store, widget, terminal and report.

    from ftlab.quiz import Quiz; Quiz(chapter="02")     # end of a chapter
    from ftlab.quiz import Practice, Daily, Review       # quizzes/practice.ipynb
"""

from .bank import BankError, choice_order, load_banks, ordered_choices, validate
from .session import Session
from .store import Store, StoreError
from .widget import Daily, Practice, Quiz, Review

__all__ = ["Quiz", "Practice", "Daily", "Review", "Session", "Store", "StoreError", "BankError", "choice_order",
           "ordered_choices", "load_banks", "validate"]
