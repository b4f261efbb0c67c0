"""Top-p on the CPU sorts float32 scores as integers (a radix sort): the same sorted values as the
float sort, ties in index order, and the nucleus the official rule keeps."""

import pytest
import torch

from acestep_core.lm.sampling import sort_descending, top_p_filter


def scores_with(ties: bool, size: int = 64000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(1, size, generator=gen) * 3
    scores[0, ::7] = float("-inf")                 # masked by the constraints
    scores[0, 5] = -0.0
    scores[0, 6] = 0.0
    if ties:  # bfloat16 logits, as the bfloat16 LM produces them: many equal values
        scores = scores.bfloat16().float()
    return scores


def float_sort_nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """The removed-token mask by the float sort (the official rule, `_apply_top_p_filter`)."""
    values, order = torch.sort(scores, descending=True)
    cum = torch.cumsum(torch.softmax(values.float(), dim=-1), dim=-1)
    remove = cum > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    return remove.scatter(1, order, remove)


@pytest.mark.parametrize("ties", [False, True])
def test_integer_sort_gives_the_float_sort_values_and_a_stable_order(ties):
    scores = scores_with(ties)
    values, order = sort_descending(scores)
    reference, _ = torch.sort(scores, descending=True)
    assert torch.equal(values, reference)
    assert torch.equal(torch.sort(order[0]).values, torch.arange(scores.shape[-1]))  # a permutation
    assert torch.equal(scores.gather(-1, order), values)
    # Equal values keep their index order; -0.0 lands just below 0.0 and -inf last.
    bits = values[0].view(torch.int32)
    same = bits[1:] == bits[:-1]  # the same float, bit for bit (0.0 and -0.0 are two values here)
    assert bool((order[0, 1:][same] > order[0, :-1][same]).all())
    assert torch.isneginf(values[0, -1]) and (order[0] == 6).nonzero() < (order[0] == 5).nonzero()


def test_rows_are_sorted_independently_and_other_dtypes_take_the_float_sort():
    scores = torch.cat([scores_with(False, 1000, seed) for seed in range(3)])
    values, order = sort_descending(scores)
    assert torch.equal(values, torch.sort(scores, descending=True).values)
    assert torch.equal(scores.gather(-1, order), values)
    half = scores.bfloat16()
    assert torch.equal(sort_descending(half)[0], torch.sort(half, descending=True).values)
    assert torch.equal(sort_descending(torch.tensor([2.5]))[0], torch.tensor([2.5]))


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_nucleus_is_the_official_rule(top_p):
    scores = scores_with(False)
    kept = ~torch.isneginf(top_p_filter(scores.clone(), top_p))
    assert torch.equal(kept, ~(float_sort_nucleus(scores, top_p) | torch.isneginf(scores)))
    assert 0 < int(kept.sum()) < int((~torch.isneginf(scores)).sum())


def test_nucleus_with_ties_keeps_as_many_and_differs_only_inside_the_boundary_tie():
    scores = scores_with(True)
    kept = ~torch.isneginf(top_p_filter(scores.clone(), 0.9))
    reference = ~(float_sort_nucleus(scores, 0.9) | torch.isneginf(scores))
    assert int(kept.sum()) == int(reference.sum())
    # Every kept score is at least the smallest kept one, in both: the sets differ at most in
    # which of the tokens equal to that boundary value are kept.
    boundary = scores[kept].min()
    assert boundary == scores[reference].min()
    assert torch.equal(kept & (scores != boundary), reference & (scores != boundary))


def test_nucleus_by_hand():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    kept = ~torch.isneginf(top_p_filter(probs.log(), 0.9))  # 0.5 + 0.3 = 0.8 <= 0.9: 0.15 is kept, 0.05 not
    assert kept.tolist() == [[False, True, True, True]]


def test_other_cpus_take_the_float_sort(monkeypatch):
    from acestep_core.lm import sampling

    monkeypatch.setattr(sampling, "is_x86", lambda: False)
    scores = scores_with(False, 1000)
    reference = torch.sort(scores, descending=True)
    values, order = sort_descending(scores)
    assert torch.equal(values, reference.values) and torch.equal(order, reference.indices)
