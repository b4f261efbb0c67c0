"""The LM never plans more audio codes than generation accepts (codes.MAX_CODES, 600 s)."""

import pytest

import acestep_core.lm.planner as planner_module
from acestep_core.codes import MAX_CODES
from acestep_core.lm import LMPlanner, LMSampling


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def planner(tiny_dir):
    return LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny")


@pytest.mark.parametrize("metadata, constrained", [({}, True), ({}, False), ({"duration": 600}, False)])
def test_codes_phase_budget_stays_within_the_generation_limit(planner, monkeypatch, metadata, constrained):
    budgets = []

    def record(decoder, rows, fsm, sampling, max_new, *rest):
        budgets.append(max_new)
        raise Stop  # the budget is what is under test, not thousands of random-weight tokens

    monkeypatch.setattr(planner_module, "decode_with_fsm", record)
    with pytest.raises(Stop):
        # No CoT duration: the budget alone decides how long the plan can get (it was 3010 codes).
        planner._codes_phase("pop", "", planner.vocabulary(), LMSampling(seed=1), metadata, None, constrained,
                             None, None, None, False)
    assert budgets == [MAX_CODES]
