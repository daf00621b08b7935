"""Masking plans: counts, tube structure and the restore permutation."""

from __future__ import annotations

import pytest
import torch

from echofm.model import make_mask, num_visible
from echofm.model.masking import gather_tokens

from tests.factories.model import seeded


def test_num_visible() -> None:
    assert num_visible(1568, 0.75) == 392
    assert num_visible(1568, 0.0) == 1568
    assert num_visible(196, 0.75) == 49
    assert num_visible(10, 0.7) == 3  # 10 * 0.3 is 2.9999999999999996 in floating point
    assert num_visible(4, 0.99) == 1  # never an empty encoder input


@pytest.mark.parametrize("mode", ["random", "tube"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_exact_mask_count_per_sample(mode: str, ratio: float) -> None:
    grid = (8, 14, 14)
    plan = make_mask(mode, 5, grid, ratio, generator=seeded(0))
    keep = num_visible(1568, ratio) if mode == "random" else 8 * num_visible(196, ratio)
    assert plan.mask.shape == (5, 1568) and plan.mask.dtype == torch.float32
    assert plan.ids_keep.shape == (5, keep)
    assert torch.all(plan.mask.sum(dim=1) == 1568 - keep)
    # The mask marks exactly the slots that are not kept.
    kept = torch.zeros(5, 1568).scatter_(1, plan.ids_keep, 1.0)
    assert torch.equal(kept, 1.0 - plan.mask)


@pytest.mark.parametrize("mode", ["random", "tube"])
def test_ids_restore_inverts_the_shuffle(mode: str) -> None:
    plan = make_mask(mode, 3, (4, 3, 3), 0.5, generator=seeded(1))
    slots = torch.arange(36).expand(3, -1)
    visible = torch.gather(slots, 1, plan.ids_keep)
    masked_slots = torch.stack([torch.nonzero(row).squeeze(1) for row in plan.mask])
    # Any order of the masked remainder restores correctly: only its set matters to the decoder,
    # which fills those slots with the same mask token.
    shuffled = torch.cat([visible, masked_slots], dim=1)
    restored = torch.gather(shuffled, 1, plan.ids_restore)
    visible_restored = torch.where(plan.mask.bool(), -1, restored)
    assert torch.equal(visible_restored, torch.where(plan.mask.bool(), -1, slots))
    # Masked slots read from the masked part of the concatenation, i.e. get the mask token.
    len_keep = plan.ids_keep.shape[1]
    assert torch.all((plan.ids_restore >= len_keep) == plan.mask.bool())


def test_tube_keeps_the_same_spatial_set_at_every_time_slice() -> None:
    t, h, w = 8, 7, 7
    plan = make_mask("tube", 6, (t, h, w), 0.75, generator=seeded(2))
    per_slice = plan.mask.view(6, t, h * w)
    assert torch.equal(per_slice, per_slice[:, :1].expand(-1, t, -1))
    # Different clips get different tubes.
    assert not torch.equal(per_slice[0, 0], per_slice[1, 0])


def test_random_mode_varies_over_time_and_between_clips() -> None:
    plan = make_mask("random", 2, (8, 7, 7), 0.75, generator=seeded(3))
    per_slice = plan.mask.view(2, 8, 49)
    assert not torch.equal(per_slice[0, 0], per_slice[0, 1])
    assert not torch.equal(plan.mask[0], plan.mask[1])


def test_gather_tokens() -> None:
    x = torch.arange(24.0).view(2, 4, 3)
    ids = torch.tensor([[3, 0], [1, 1]])
    out = gather_tokens(x, ids)
    assert torch.equal(out[0, 0], x[0, 3]) and torch.equal(out[1, 1], x[1, 1])
