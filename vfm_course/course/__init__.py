"""The course around the package: exercises and their checkers, the grader, the student
notebooks, the book, and the pictures and widgets the lessons show.

Nothing below ``course`` imports it. Its command-line tools run as modules::

    python -m vfm_course.course.student     # regenerate notebooks/student/
    python -m vfm_course.course.grading LESSON SUBMISSIONS --out grades
    python -m vfm_course.course.book execute notebooks/[0-9]*.ipynb
"""
