"""The request schema is the one source of every door's fields, ranges and defaults."""

from __future__ import annotations

import argparse

import pytest

import nodes_harness as h
from acestep_core import schema
from acestep_core.errors import InputError
from acestep_core.plan import Plan
from acestep_core.planning import PlanOptions, fill_request
from acestep_core.request import GenerationRequest
from acestep_core.server.params import RELEASE_FIELDS, FieldError, parse_release_request


def _generate_parser() -> argparse.ArgumentParser:
    from acestep_core.cli import generate

    root = argparse.ArgumentParser()
    generate.add_parser(root.add_subparsers())
    return root._subparsers._group_actions[0].choices["generate"]


def test_every_cli_field_is_a_flag_with_the_schema_default():
    actions = {a.dest: a for a in _generate_parser()._actions}
    for field in schema.FIELDS:
        if "cli" not in field.doors:
            continue
        action = actions[field.name]
        assert field.flag in action.option_strings
        assert action.default == field.default_for("cli"), field.name


def test_every_rest_field_comes_from_the_schema_with_its_rest_default_and_aliases():
    table = {f.engine_name: f for f in RELEASE_FIELDS if f.engine_name}
    for field in schema.FIELDS:
        if "rest" not in field.doors:
            continue
        rest = table[field.name]
        assert rest.name == field.rest and rest.aliases == field.aliases
        assert rest.default == field.default_for("rest"), field.name


def test_doors_keep_their_official_defaults():
    rest = parse_release_request({})
    assert rest.lm_cfg_scale == 2.5 and rest.vocal_language == "en" and rest.inference_steps == 8
    assert PlanOptions().lm_cfg_scale == 2.0 and GenerationRequest().vocal_language == "unknown"
    args = _generate_parser().parse_args([])
    assert args.lm_cfg_scale == 2.0 and args.vocal_language == "unknown" and args.inference_steps is None


@pytest.mark.parametrize("name, low, high", [("shift", 0.1, 10.0), ("guidance_scale", 0.0, 30.0),
                                             ("repaint_strength", 0.0, 1.0)])
def test_a_range_is_the_same_at_every_door(name, low, high):
    field = schema.spec(name)
    assert (field.low, field.high) == (low, high)
    for value in (low, high):
        GenerationRequest(**{name: value}).validate()
        parse_release_request({field.rest: value})
    for value in (low - 0.05, high + 0.05):
        with pytest.raises(InputError, match=name):
            GenerationRequest(**{name: value}).validate()
        with pytest.raises(FieldError, match=name):
            parse_release_request({field.rest: value})


def test_node_widget_ranges_come_from_the_schema():
    h.install_fake_host()
    _, node_map = h.load_pack()
    inputs = {i.id: i for i in node_map["ACE15S_Text2Music"].define_schema().inputs}
    for field in schema.FIELDS:
        widget = inputs.get(field.widget) if field.widget else None
        if widget is None or field.low is None or field.widget in ("duration", "bpm", "seed"):
            continue  # duration / bpm start at 0 (auto); the node seed is never random (-1)
        assert (widget.options["min"], widget.options["max"]) == (field.low, field.high), field.name
    assert inputs["batch_size"].options["max"] == schema.MAX_BATCH
    assert inputs["duration"].options["max"] == schema.MAX_DURATION


def test_the_readme_table_is_generated_from_the_schema():
    readme = (h.REPO_ROOT / "README.md").read_text()
    assert schema.markdown_table() in readme, "run scripts/build_readme.sh"


# ---- the one rule for how a plan fills a request (acestep_core/planning.py)

PLAN = Plan(caption="lm caption", lyrics="lm lyrics", bpm=128, key_scale="A minor", time_signature="3",
            audio_duration=42.0, vocal_language="ja", audio_codes=[1, 2, 3])


def test_the_plan_fills_only_what_the_user_left_automatic():
    typed = GenerationRequest(caption="mine", lyrics="my words", bpm=90, key_scale="C major", time_signature="4",
                              audio_duration=30.0, vocal_language="en")
    filled = fill_request(typed, PLAN)
    assert (filled.caption, filled.lyrics) == ("lm caption", "lm lyrics")  # the LM rewrote them when asked
    assert (filled.bpm, filled.key_scale, filled.time_signature, filled.audio_duration, filled.vocal_language) == \
        (90, "C major", "4", 30.0, "en")
    assert filled.audio_code_string == [1, 2, 3]
    empty = fill_request(GenerationRequest(), PLAN)
    assert (empty.bpm, empty.key_scale, empty.time_signature, empty.audio_duration, empty.vocal_language) == \
        (128, "A minor", "3", 42.0, "ja")
    assert fill_request(filled, PLAN) == filled  # applying it again changes nothing


def test_typed_names_the_fields_a_client_sent():
    # The REST default vocal_language "en" is not the client's choice: the plan's language fills it.
    request = GenerationRequest(vocal_language="en")
    assert fill_request(request, PLAN, typed=set()).vocal_language == "ja"
    assert fill_request(request, PLAN, typed={"vocal_language"}).vocal_language == "en"


def test_codes_the_user_gave_win_and_only_text2music_takes_the_plans():
    given = fill_request(GenerationRequest(audio_code_string="<|audio_code_9|>"), PLAN)
    assert given.audio_code_string == "<|audio_code_9|>"
    repaint = fill_request(GenerationRequest(task_type="repaint"), PLAN)
    assert repaint.audio_code_string == ""


def test_plan_keeps_the_lm_spellings_as_aliases():
    plan = Plan.from_dict({"keyscale": "D minor", "duration": 7, "language": "en", "timesignature": "6"})
    assert (plan.key_scale, plan.audio_duration, plan.vocal_language, plan.time_signature) == ("D minor", 7, "en", "6")
    plan.keyscale = "E major"
    assert plan.key_scale == "E major"


class RecordingPlanner:
    """Stands in for LMPlanner: records each stage's call and answers with a fixed plan."""

    def __init__(self):
        self.calls = []

    def _answer(self, name, kwargs, **plan):
        self.calls.append((name, kwargs))
        return Plan(**plan, lm_seed=11)

    def create_sample(self, query, **kwargs):
        return self._answer("sample", dict(kwargs, query=query), caption="sampled", lyrics="sampled lyrics",
                            bpm=100, audio_duration=700.0)

    def format_input(self, caption, lyrics, **kwargs):
        return self._answer("format", dict(kwargs, caption=caption, lyrics=lyrics), caption="formatted",
                            lyrics="formatted lyrics")

    def think(self, caption, lyrics, **kwargs):
        return self._answer("think", dict(kwargs, caption=caption), caption=caption, lyrics=lyrics,
                            key_scale="B minor", audio_codes=[5] * 10 if kwargs["generate_codes"] else [])


def test_planning_runs_the_official_stages_in_order_each_on_the_last_ones_result():
    from acestep_core.planning import plan_request

    lm = RecordingPlanner()
    options = PlanOptions(sample_query="a calm song", use_format=True, thinking=True, max_duration=240)
    request, report = plan_request(GenerationRequest(bpm=90), options, lambda: lm)
    assert [name for name, _ in lm.calls] == ["sample", "format", "think"]
    assert lm.calls[1][1]["caption"] == "sampled" and lm.calls[2][1]["caption"] == "formatted"
    assert lm.calls[2][1]["bpm"] == 90 and lm.calls[2][1]["max_duration"] == 240  # the user's bpm, the cap
    assert (request.caption, request.lyrics, request.bpm, request.key_scale) == ("formatted", "formatted lyrics",
                                                                                90, "B minor")
    assert request.audio_duration == 240.0 and "limit of 240" in report.notices[0]
    assert request.audio_code_string == [5] * 10 and report.lm_seed == 11


def test_planning_skips_the_lm_for_source_tasks_and_fills_metas_only_when_an_lm_is_there():
    from acestep_core.planning import plan_request

    lm = RecordingPlanner()
    cover = GenerationRequest(task_type="cover", src_audio="x.wav")
    assert plan_request(cover, PlanOptions(thinking=True), lambda: lm)[0] is cover and not lm.calls
    options = PlanOptions(fill_missing_metas=True)
    assert not plan_request(GenerationRequest(), options, optional_planner=lambda: None)[1].used_lm
    request, report = plan_request(GenerationRequest(), options, optional_planner=lambda: lm)
    assert report.stages[0][0] == "metas" and lm.calls[0][1]["generate_codes"] is False
    assert request.key_scale == "B minor" and request.audio_code_string == ""


def test_plan_options_refuse_bad_text_before_any_model_loads():
    with pytest.raises(InputError, match="sample_query contains a NUL character"):
        PlanOptions(sample_query="a song\0").validate()
    with pytest.raises(InputError, match="lm cfg scale must be >= 1.0"):
        PlanOptions(lm_cfg_scale=-3).validate()
