"""The course's exercises, one module per lesson: each holds its checkers, the references that
stand in for an unfinished answer, and its registry entries side by side."""

from .exercise import Exercise, HiddenCase
from .registry import EXERCISES, SETUP_CELLS, check_exercise, exercises_of
