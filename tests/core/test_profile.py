"""The profiles: smoke is the tiny profile with a tenth of its live steps, and nothing else."""

from __future__ import annotations

import dataclasses

import pytest

from vfm_course.core import PROFILES, get_profile


def test_smoke_differs_from_tiny_only_in_its_live_steps():
    tiny, smoke = PROFILES["tiny"], PROFILES["smoke"]
    assert smoke.live_steps == tiny.live_steps // 10
    assert dataclasses.replace(smoke, name="tiny", live_steps=tiny.live_steps) == tiny


def test_the_switch_names_every_profile(monkeypatch):
    monkeypatch.setenv("VFM_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    monkeypatch.setenv("VFM_PROFILE", "small")
    with pytest.raises(ValueError, match="smoke"):
        get_profile()
