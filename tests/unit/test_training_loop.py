"""Batching and schedule helpers of the training loop."""

import pytest
import torch

from unifashion.training.loop import cosine_with_warmup, epoch_batches, grouped_epoch_batches


def test_epoch_batches_cover_each_index_once():
    batches = epoch_batches(10, 3, torch.Generator().manual_seed(0))
    flat = torch.cat(batches).tolist()
    assert len(batches) == 3 and all(len(b) == 3 for b in batches)  # drop_last
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))


def test_grouped_batches_hold_one_group_and_never_repeat():
    groups = ["dress"] * 40 + ["shirt"] * 30 + ["skirt"] * 30
    batches = grouped_epoch_batches(groups, 8, torch.Generator().manual_seed(1), share=1.0)
    flat = torch.cat(batches).tolist()
    assert len(flat) == len(set(flat))  # no index twice in an epoch
    single = [b for b in batches if len({groups[i] for i in b.tolist()}) == 1]
    # With share=1 every full batch of a group is single-group: 5 + 3 + 3 of them,
    # the remainders (0 + 6 + 6) fill one mixed batch of 8.
    assert len(single) >= 11
    assert all(len(b) == 8 for b in batches) and len(batches) == 12


def test_grouped_batches_share_zero_is_mixed_and_share_is_checked():
    groups = ["a", "b"] * 32
    batches = grouped_epoch_batches(groups, 16, torch.Generator().manual_seed(2), share=0.0)
    assert sum(len(b) for b in batches) == 64
    assert all(len({groups[i] for i in b.tolist()}) == 2 for b in batches)
    with pytest.raises(ValueError, match="share"):
        grouped_epoch_batches(groups, 16, torch.Generator(), share=1.5)


def test_cosine_with_warmup_by_hand():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=12, warmup_steps=2)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)  # cosine starts at its peak
    assert lrs[7] == pytest.approx(0.5)  # half way through the 10 decay steps
    assert lrs[-1] < 0.05


def test_constant_schedule_keeps_the_warmed_up_rate_and_adamw_takes_the_betas():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=10, warmup_steps=4, kind="constant")
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="lr_schedule 'linear': expected one of cosine, constant"):
        cosine_with_warmup(opt, 10, 0, kind="linear")
    from unifashion.training.loop import adamw

    w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = adamw([("w", w), ("b", b)], 1e-3, 0.1, betas=(0.9, 0.99), eps=1e-8)
    assert [g["betas"] for g in opt.param_groups] == [(0.9, 0.99)] * 2
    assert [g["eps"] for g in opt.param_groups] == [1e-8] * 2
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # no decay on the bias
