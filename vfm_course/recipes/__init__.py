"""The recipes that produce the course's checkpoints, and one runner for all of them::

    python -m vfm_course.recipes vit_digits --force      # retrain, write, update the manifest
    python -m vfm_course.recipes.downstream finetune_cifar10_full

Settings are frozen dataclasses (:mod:`.settings`), listed by name in :mod:`.catalog`.
"""
