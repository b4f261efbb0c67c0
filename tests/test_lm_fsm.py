"""The constrained decoder refuses what it must and forces what the user gave."""

import pytest
import torch

from acestep_core.errors import InputError
from acestep_core.lm.constants import AUDIO_CODE_BASE, IM_END_ID, VALID_KEYSCALES, VALID_LANGUAGES
from acestep_core.lm.constraints import MetadataFSM, State, Vocabulary
from acestep_core.lm.planner import validate_user_fields
from acestep_core.lm.prompts import parse_lm_output
from acestep_core.lm.tokenizer import LMTokenizer


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return LMTokenizer(tiny_dir / "acestep-5Hz-lm-tiny")


@pytest.fixture(scope="module")
def vocab(tok):
    return Vocabulary(tok, max_duration=240)


def drive(fsm, tok, preferred: list[int], max_steps=200) -> str:
    """Run the FSM with logits that always prefer `preferred` (in order), then anything."""
    out = []
    for _ in range(max_steps):
        def scores():
            s = torch.zeros(len(tok))
            for rank, t in enumerate(preferred):
                s[t] = 100.0 - rank
            return s
        forced, masked = fsm.step(scores)
        token = forced if forced is not None else int(torch.argmax(masked))
        fsm.update(token)
        out.append(token)
        if token == IM_END_ID:
            break
    return tok.decode(out)


def test_out_of_range_bpm_and_duration_are_refused(tok, vocab):
    # The model "wants" 9, 9, 9 ... : bpm must stay in 30..300 and duration under the 240 s cap.
    nines = tok.encode("9")
    fsm = MetadataFSM(vocab, phase="cot", stop_at_reasoning=True, skip_caption=True, skip_language=True)
    text = drive(fsm, tok, nines + tok.encode(" 9") + tok.encode(" C") + tok.encode(" major"))
    metadata, _ = parse_lm_output(text)
    assert 30 <= metadata["bpm"] <= 300
    assert 10 <= metadata["duration"] <= 240
    assert metadata["keyscale"] in VALID_KEYSCALES
    assert metadata["timesignature"] in {"2", "3", "4", "6"}
    assert text.startswith("<think>\nbpm:") and text.endswith("<|im_end|>")


def test_unknown_key_and_language_cannot_be_generated(tok, vocab):
    fsm = MetadataFSM(vocab, phase="cot", stop_at_reasoning=True, skip_caption=True)
    bad = tok.encode(" H") + tok.encode(" xx") + tok.encode(" qq") + tok.encode(" 5")
    metadata, _ = parse_lm_output(drive(fsm, tok, bad))
    assert metadata["keyscale"] in VALID_KEYSCALES
    assert metadata["language"] in VALID_LANGUAGES
    assert metadata["timesignature"] in {"2", "3", "4", "6"}


def test_user_fields_are_forced(tok, vocab):
    fsm = MetadataFSM(vocab, phase="cot", stop_at_reasoning=True, skip_caption=True,
                      user_metadata={"bpm": 140, "duration": 12, "keyscale": "F# minor", "language": "ja",
                                     "timesignature": "6"})
    text = drive(fsm, tok, tok.encode(" 9"))
    assert text == "<think>\nbpm: 140\nduration: 12\nkeyscale: F# minor\nlanguage: ja\ntimesignature: 6\n<|im_end|>"


def test_codes_state_gives_exactly_the_target_then_eos(tok, vocab):
    fsm = MetadataFSM(vocab, phase="codes", target_codes=7)
    fsm.start_in_codes()
    ids = []
    for _ in range(20):
        scores = torch.zeros(len(tok))
        scores[IM_END_ID] = 50.0  # the model wants to stop early: not allowed
        scores[42] = 60.0  # a text token: not allowed in the codes state
        forced, masked = fsm.step(lambda: scores.clone())
        token = forced if forced is not None else int(torch.argmax(masked))
        fsm.update(token)
        ids.append(token)
        if token == IM_END_ID:
            break
    assert len(ids) == 8 and ids[-1] == IM_END_ID
    assert all(AUDIO_CODE_BASE <= t < AUDIO_CODE_BASE + 64000 for t in ids[:-1])


def test_caption_blocks_codes_and_backticks(tok, vocab):
    fsm = MetadataFSM(vocab, phase="cot", stop_at_reasoning=True)
    for t in tok.encode("<think>\nbpm: 90\ncaption:"):
        forced, _ = fsm.step(lambda: torch.zeros(len(tok)))
        fsm.update(forced if forced is not None else t)
    assert fsm.state == State.CAPTION_VALUE
    forced, masked = fsm.step(lambda: torch.zeros(len(tok)))
    assert forced is None
    assert torch.isinf(masked[AUDIO_CODE_BASE:AUDIO_CODE_BASE + 64000]).all()
    assert torch.isinf(masked[tok.encode("`")[-1]])


def test_user_values_are_validated():
    with pytest.raises(InputError, match="bpm 400"):
        validate_user_fields(bpm=400)
    with pytest.raises(InputError, match="unknown key"):
        validate_user_fields(keyscale="H major")
    with pytest.raises(InputError, match="unknown language"):
        validate_user_fields(language="klingon")
    with pytest.raises(InputError, match="time signature"):
        validate_user_fields(timesignature="5")
    with pytest.raises(InputError, match="duration"):
        validate_user_fields(duration=700, max_duration=600)
