"""The LM's one-token steps pick their CPU thread count by measuring, and never change a token doing so."""

import pytest
import torch

from acestep_core.errors import InputError
from acestep_core.lm import LMPlanner, LMSampling, decode_threads
from acestep_core.lm.decode_threads import DecodeThreads, requested_threads
from acestep_core.lm.decoder import StaticCacheDecoder
from acestep_core.lm.generation import decode_codes

ROWS = [[151644, 8948, 198, 2, 17, 40, 151645, 198, 151644, 872], [151644, 8948, 198, 5, 151645, 198]]


@pytest.fixture(scope="module")
def model(tiny_dir):
    return LMPlanner.from_pretrained(tiny_dir / "acestep-5Hz-lm-tiny", device="cpu", dtype="float32").model


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


class FakeClock:
    """perf_counter for the chooser: a step costs what `cost[threads]` says, nothing else does."""

    def __init__(self, cost):
        self.now, self.cost = 0.0, cost

    def perf_counter(self):
        return self.now

    def step(self, value=0.0):
        threads = torch.get_num_threads()
        self.now += self.cost[threads]
        self.calls.append(threads)
        return torch.tensor([float(value)])

    def step_by_threads(self):
        """A step whose bits depend on the thread count, as some kernels' reductions do."""
        return self.step(value=torch.get_num_threads())


@pytest.fixture
def clock(monkeypatch, two_threads):
    fake = FakeClock({1: 1.0, 2: 0.5})
    fake.calls = []
    monkeypatch.setattr(decode_threads, "time", fake)
    return fake


@pytest.mark.parametrize("value, expected", [("", None), ("auto", None), (" AUTO ", None), ("1", 1), ("3", 3)])
def test_the_environment_asks_for_auto_or_a_count(monkeypatch, value, expected):
    monkeypatch.setenv("ACESTEP_LM_DECODE_THREADS", value)
    assert requested_threads() == expected


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("ACESTEP_LM_DECODE_THREADS", value)
    with pytest.raises(InputError, match="ACESTEP_LM_DECODE_THREADS=.*whole number >= 1, or 'auto'"):
        requested_threads()


def test_the_faster_count_runs_once_both_agree(clock):
    chooser = DecodeThreads()
    previous = chooser.begin()
    first = chooser.run(lambda: clock.step(value=7))
    assert first.item() == 7 and clock.calls == [1, 2]  # the check ran both counts
    assert chooser.current == 2
    clock.calls.clear()
    for _ in range(10):
        chooser.run(clock.step)
    assert clock.calls == [2] * 10
    chooser.end(previous)
    assert torch.get_num_threads() == previous


def test_a_busy_machine_moves_the_steps_back_to_one_thread(clock):
    chooser = DecodeThreads()
    chooser.begin()
    chooser.run(clock.step)
    assert chooser.current == 2
    clock.cost[2] = 10.0  # another job took the second core: its barrier waits dominate
    clock.calls.clear()
    probe = decode_threads.FIRST_PROBE
    for _ in range(probe + 1):
        chooser.run(clock.step)
    # the slow steps, then one probe on one thread: it is faster, so it takes over
    assert clock.calls == [2] * probe + [1] and chooser.current == 1
    clock.calls.clear()
    for _ in range(probe + 1 + 2 * probe):
        chooser.run(clock.step)
    # the next probe times two threads again, still slow: one thread stays, and probes twice as rarely
    assert clock.calls == [1] * probe + [2] + [1] * (2 * probe) and chooser.current == 1


def test_kernels_that_differ_by_thread_count_keep_one_thread_for_good(clock):
    chooser = DecodeThreads()
    chooser.begin()
    first = chooser.run(clock.step_by_threads)
    assert first.item() == 1.0
    assert clock.calls == [1, 2, 1]  # the last run on one thread rewrites what the other wrote
    clock.calls.clear()
    for _ in range(3 * decode_threads.LONGEST_PROBE):
        chooser.run(clock.step_by_threads)
    chooser.begin()
    chooser.run(clock.step_by_threads)
    assert set(clock.calls) == {1}


def test_a_fixed_count_is_used_as_it_is(clock):
    chooser = DecodeThreads(fixed=1)
    chooser.begin()
    for _ in range(40):
        chooser.run(clock.step)
    assert set(clock.calls) == {1}


def test_measured_threads_decode_the_same_codes_as_one_thread(model, monkeypatch, two_threads):
    sampling = LMSampling(temperature=0.85, cfg_scale=2.0, top_p=0.9)
    monkeypatch.setenv("ACESTEP_LM_DECODE_THREADS", "1")
    fixed = decode_codes(StaticCacheDecoder(model), ROWS, 40, sampling, torch.Generator().manual_seed(3), 2.0)
    monkeypatch.setenv("ACESTEP_LM_DECODE_THREADS", "auto")
    decoder = StaticCacheDecoder(model)
    measured = decode_codes(decoder, ROWS, 40, sampling, torch.Generator().manual_seed(3), 2.0)
    assert measured.generated_ids == fixed.generated_ids
    assert set(decoder.threads.seconds) == {1, 2}  # both counts ran
    assert torch.get_num_threads() == 2
