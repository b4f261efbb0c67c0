"""/release_task request parsing: official names and aliases, nested sources, 400s naming the field."""

import json

import pytest

from acestep_core.server.params import FieldError, parse_release_request


def parse(body, **kw):
    return parse_release_request(body, **kw)


def test_defaults_match_the_official_server():
    req = parse({})
    assert req.prompt == "" and req.lyrics == ""
    assert req.thinking is False and req.use_format is False and req.sample_mode is False
    assert req.inference_steps == 8 and req.guidance_scale == 7.0 and req.shift == 3.0
    assert req.infer_method == "ode" and req.task_type == "text2music"
    assert req.audio_format == "mp3" and req.vocal_language == "en"
    assert req.batch_size == 2  # official default when the client sends none
    assert req.use_random_seed is True and req.seed == [-1]
    assert req.lm_cfg_scale == 2.5 and req.lm_temperature == 0.85 and req.lm_top_p == 0.9
    assert req.audio_duration is None and req.bpm is None


def test_aliases_camel_case_and_nested_sources():
    req = parse({
        "caption": "lofi",
        "keyScale": "C major",
        "timeSignature": "3/4",
        "duration": "42.5",
        "description": "a calm song",
        "format": "true",
        "taskType": "repainting",
        "param_obj": json.dumps({"bpm": "96"}),
        "metas": {"language": "ja"},
    })
    assert req.prompt == "lofi"
    assert req.key_scale == "C major"
    assert req.time_signature == "3"
    assert req.audio_duration == 42.5
    assert req.sample_query == "a calm song"
    assert req.use_format is True
    assert req.task_type == "repaint"
    assert req.bpm == 96
    assert req.vocal_language == "ja"


def test_top_level_wins_over_param_obj():
    req = parse({"bpm": 120, "param_obj": {"bpm": 80}})
    assert req.bpm == 120


def test_form_strings_are_converted_and_empty_fields_mean_default():
    req = parse({"inference_steps": "4", "thinking": "0", "batch_size": "1", "bpm": "", "audio_format": ""})
    assert req.inference_steps == 4 and req.thinking is False and req.batch_size == 1
    assert req.bpm is None and req.audio_format == "mp3"


def test_explicit_seed_is_used_unless_random_was_asked_for():
    assert parse({"seed": 7}).use_random_seed is False
    assert parse({"seed": "1,2,3"}).seed == [1, 2, 3]
    req = parse({"seed": 7, "use_random_seed": True})
    assert req.use_random_seed is True


def test_duration_minus_one_means_automatic_and_repaint_end_minus_one_means_end():
    assert parse({"audio_duration": -1}).audio_duration is None
    assert parse({"repainting_end": -1}).repainting_end is None


def test_repaint_end_zero_means_end_and_the_window_is_checked_only_where_it_is_used():
    # The official server reads a false-y end as -1 and ignores the window outside repaint-like tasks.
    assert parse({"repainting_end": 0}).repainting_end is None
    assert parse({"task_type": "repaint", "repainting_start": 2, "repainting_end": 0}).repainting_end is None
    assert parse({"repainting_start": 10, "repainting_end": 5}).repainting_end == 5  # text2music: unused


def test_lm_sampling_values_read_as_the_official_server_runs_them():
    assert parse({"lm_top_k": -1}).lm_top_k == 0  # 0 or less: off
    assert parse({"lm_top_k": 40}).lm_top_k == 40
    assert parse({"lm_top_p": 1.0}).lm_top_p == 0.9 and parse({"lm_top_p": 0}).lm_top_p == 0.9
    assert parse({"lm_top_p": 0.5}).lm_top_p == 0.5
    assert parse({"lm_cfg_scale": 0.5}).lm_cfg_scale == 1.0  # guidance only above 1
    assert parse({"lm_cfg_scale": 3}).lm_cfg_scale == 3


def test_continuation_task_names():
    assert parse({"task_type": "continuation"}).task_type == "continuation"
    assert parse({"task_type": "extend"}).task_type == "continuation"


def test_cover_noise_strength_field():
    assert parse({}).cover_noise_strength == 0.0
    assert parse({"coverNoiseStrength": "0.4"}).cover_noise_strength == 0.4
    with pytest.raises(FieldError, match="between 0 and 1"):
        parse({"cover_noise_strength": 2})


def test_track_tasks_and_their_fields():
    assert parse({"task_type": "Extract", "track_name": "Backing Vocals"}).track_name == "backing_vocals"
    assert parse({"task_type": "lego", "trackName": "DRUMS"}).task_type == "lego"
    assert parse({"track_classes": ["drums", "bass"]}).track_classes == ["drums", "bass"]
    assert parse({"trackClasses": "drums, bass"}).track_classes == ["drums", "bass"]
    assert parse({"instruments": "guitar|strings"}).track_classes == ["guitar", "strings"]
    assert parse({}).track_classes == [] and parse({}).track_name == ""
    # the official default instruction means "the task's own"; any other text replaces it
    assert parse({"instruction": "Fill the audio semantic mask based on the given conditions:"}).instruction == ""
    assert parse({"instruction": "Extract the BASS track from the audio:"}).instruction.startswith("Extract the BASS")


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"bpm": 12}, "bpm", "between 30 and 300"),
        ({"bpm": "fast"}, "bpm", "integer"),
        ({"thinking": "maybe"}, "thinking", "true or false"),
        ({"inference_steps": 2.5}, "inference_steps", "integer"),
        ({"audio_format": "wma"}, "audio_format", "mp3, wav, flac, opus"),
        ({"track_name": "kazoo"}, "track_name", "unknown track 'kazoo'"),
        ({"instruments": ["drums", "cowbell"]}, "instruments", "unknown track 'cowbell'"),
        ({"task_type": "remix"}, "task_type", "must be one of"),
        ({"duration": 5}, "duration", "between 10 and 600"),
        ({"timesignature": "5/4"}, "timesignature", "2, 3, 4, 6"),
        ({"language": "klingon"}, "language", "unsupported language"),
        ({"seed": "1,x"}, "seed", "integer"),
        ({"timesteps": "0.5,0.7"}, "timesteps", "decreasing"),
        ({"batch_size": 9}, "batch_size", "between 1 and 8"),
        ({"audio_cover_strength": 1.5}, "audio_cover_strength", "between 0 and 1"),
        ({"param_obj": "{not json"}, "param_obj", "not valid JSON"),
        ({"task_type": "repaint", "repainting_start": 10, "repainting_end": 5}, "repainting_end", "greater than"),
        ({"lm_top_p": 1.5}, "lm_top_p", "between 0 and 1"),
        ({"lm_cfg_scale": -1}, "lm_cfg_scale", "between 0 and"),
        ({"use_adg": "sometimes"}, "use_adg", "true or false"),
        ({"prompt": {"nested": 1}}, "prompt", "string"),
    ],
)
def test_bad_values_name_the_field(body, field, words):
    with pytest.raises(FieldError) as info:
        parse(body)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert words in str(info.value)


def test_server_default_batch_size_is_configurable():
    assert parse({}, default_batch_size=1).batch_size == 1


def test_unknown_fields_are_ignored():
    req = parse({"lm_backend": "vllm", "use_tiled_decode": True, "whatever": 1})
    assert "whatever" not in req.to_dict()


def test_audio_codes_one_string_or_one_per_batch_item():
    one = "<|audio_code_1|><|audio_code_2|>"
    assert parse({"audio_code_string": one}).audio_code_string == one
    assert parse({"audio_code_string": ["<|audio_code_1|>", "<|audio_code_2|>"][:1]}).audio_code_string == "<|audio_code_1|>"
    per_item = parse({"audio_code_string": [one, "<|audio_code_7|>"], "batch_size": 2})
    assert per_item.audio_code_string == [one, "<|audio_code_7|>"]


def test_audio_codes_as_a_list_of_integers_are_one_code_each():
    from acestep_core.codes import codes_per_item

    # Not the one code 123: the engine's own message says a list of integers is valid.
    for sent in ([1, 2, 3], ["1", "2", "3"], [1.0, 2, "3"]):
        codes = parse({"audio_code_string": sent}).audio_code_string
        assert codes_per_item(codes, 2) == [[1, 2, 3], [1, 2, 3]], sent
    per_item = parse({"audio_code_string": [[1, 2], [3, 4]], "batch_size": 2}).audio_code_string
    assert codes_per_item(per_item, 2) == [[1, 2], [3, 4]]
    with pytest.raises(Exception, match="audio code 70000 is out of range"):
        codes_per_item(parse({"audio_code_string": [5, 70000]}).audio_code_string, 1)


def test_every_release_field_takes_its_camelcase_spelling():
    """The official server reads snake_case and camelCase for every field (useCotCaption, fullAnalysisOnly...)."""
    from acestep_core.server.params import RELEASE_FIELDS

    def camel(name):
        head, *rest = name.split("_")
        return head + "".join(part.capitalize() for part in rest)

    missing = [f.name for f in RELEASE_FIELDS if "_" in f.name and camel(f.name) not in f.names]
    assert missing == []
    req = parse_release_request({"useCotCaption": False, "useCotLanguage": "false", "analysisOnly": True})
    assert (req.use_cot_caption, req.use_cot_language, req.analysis_only) == (False, False, True)
