"""One set of yes / no words for every boolean the engine reads (environment, CLI, REST)."""

import argparse
import logging

import pytest

from acestep_core.cli.schema_args import parse_bool
from acestep_core.errors import InputError
from acestep_core.lm.decoder import compile_requested
from acestep_core.lm.packed_weights import packing_enabled
from acestep_core.memory.dtypes import cpu_bf16_override
from acestep_core.server.params import to_bool
from acestep_core.switches import FALSE_WORDS, TRUE_WORDS, env_flag, parse_switch
from acestep_core.vae_compile import compile_requested as vae_compile_requested


@pytest.mark.parametrize("word, expected", [(w, True) for w in sorted(TRUE_WORDS) + [" YES ", "On"]]
                         + [(w, False) for w in sorted(FALSE_WORDS) + [" No", "OFF"]])
def test_every_front_end_reads_the_same_yes_and_no_words(word, expected):
    assert parse_switch(word) is expected
    assert to_bool(word) is expected
    assert parse_bool(word) is expected
    assert env_flag("X", not expected, "", {"X": word}) is expected
    assert cpu_bf16_override({"ACESTEP_CPU_BF16": word}) is expected


@pytest.mark.parametrize("raw", [None, "", "  ", "auto", "AUTO"])
@pytest.mark.parametrize("default", [True, False])
def test_an_unset_or_auto_flag_keeps_its_default(raw, default):
    env = {} if raw is None else {"X": raw}
    assert env_flag("X", default, "", env) is default


@pytest.mark.parametrize("word", ["maybe", "2", "tru", "yes please"])
def test_other_words_are_errors_that_say_what_to_set(word, caplog):
    assert parse_switch(word) is None
    with caplog.at_level(logging.WARNING, logger="acestep_core.memory"):
        assert cpu_bf16_override({"ACESTEP_CPU_BF16": word}) is None  # the dtype decision warns and goes on
    assert f"ignoring ACESTEP_CPU_BF16='{word}'" in caplog.text
    with pytest.raises(InputError, match=rf"X='{word.strip()}' is not understood: set 1 or 0"):
        env_flag("X", False, "set 1 or 0", {"X": f" {word} "})
    with pytest.raises(ValueError, match="expected true or false"):
        to_bool(word)
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
        parse_bool(word)


@pytest.mark.parametrize("name, read, default", [
    ("ACESTEP_LM_COMPILE", lambda: compile_requested(None), False),
    ("ACESTEP_LM_PACKED_WEIGHTS", packing_enabled, True),
    ("ACESTEP_VAE_COMPILE", vae_compile_requested, False),
])
def test_the_engine_flags_share_the_words(monkeypatch, name, read, default):
    monkeypatch.delenv(name, raising=False)
    assert read() is default
    for word, expected in (("y", True), ("n", False), ("auto", default)):
        monkeypatch.setenv(name, word)
        assert read() is expected
    monkeypatch.setenv(name, "fast")
    with pytest.raises(InputError, match=rf"{name}='fast' is not understood"):
        read()
