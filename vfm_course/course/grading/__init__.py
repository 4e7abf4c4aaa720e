"""The grader: each submission's answers run in their own kernels with hidden check cells, whose
printed results nbval compares outside the student's kernel (:mod:`.grader`, :mod:`.hidden`)."""
