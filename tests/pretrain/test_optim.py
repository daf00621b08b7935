from __future__ import annotations

import copy
import math

import pytest
import torch

from echofm.model import build_model
from echofm.pretrain.optim import (
    build_optimizer,
    build_scheduler,
    fused_adamw_ok,
    param_groups,
    scaled_lr,
    warmup_cosine,
)


def test_lr_follows_the_linear_scaling_rule():
    assert scaled_lr(1.5e-4, 256) == pytest.approx(1.5e-4)
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_lr(1.5e-4, 8) == pytest.approx(1.5e-4 / 32)


def test_no_decay_on_norms_biases_position_tables_and_tokens():
    model = build_model("tiny", img_size=32, num_frames=8)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"cls_token", "mask_token", "pos_embed_spatial", "pos_embed_temporal"} <= undecayed
    assert "norm.weight" in undecayed and "blocks.0.attn.qkv.bias" in undecayed
    assert "blocks.0.attn.qkv.weight" in decayed and "patch_embed.proj.weight" in decayed
    assert not any(n.endswith(".bias") or "norm" in n.split(".")[-2] for n in decayed)
    assert len(decayed) + len(undecayed) == len(list(model.parameters()))


def test_warmup_then_cosine_shape():
    factor = warmup_cosine(total_steps=100, warmup_steps=10, min_ratio=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(100) == pytest.approx(0.1)
    values = [factor(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert warmup_cosine(10, 0)(0) == pytest.approx(1.0)


def test_scheduler_drives_the_optimizer_lr_and_betas():
    model = build_model("tiny", img_size=32, num_frames=8)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    scheduler = build_scheduler(optimizer, total_steps=20, warmup_steps=4)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3 / 4)
    assert lrs[3] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert optimizer.param_groups[1]["lr"] == optimizer.param_groups[0]["lr"]


def test_invalid_schedule_is_rejected():
    with pytest.raises(ValueError):
        warmup_cosine(total_steps=5, warmup_steps=6)
    with pytest.raises(ValueError):
        warmup_cosine(total_steps=0, warmup_steps=0)


def test_fused_adamw_on_cpu_makes_the_default_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5))
    reference = copy.deepcopy(model)
    fused = build_optimizer(model, lr=1e-2, weight_decay=0.05, betas=(0.9, 0.95))
    assert fused.defaults["fused"]
    plain = torch.optim.AdamW(param_groups(reference, 0.05), lr=1e-2, betas=(0.9, 0.95),
                              foreach=False)
    x = torch.randn(4, 6)
    for _ in range(3):
        for net, opt in ((model, fused), (reference, plain)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_fused_adamw_only_for_floating_point_on_one_supported_device():
    assert fused_adamw_ok([torch.zeros(2), torch.zeros(3, dtype=torch.bfloat16)])
    assert not fused_adamw_ok([torch.zeros(2, dtype=torch.int64)])
    assert not fused_adamw_ok([torch.zeros(2, device="meta")])
    assert not fused_adamw_ok([])
