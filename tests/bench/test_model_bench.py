"""`echofm bench model`: the measuring function and the command's output."""

from __future__ import annotations

import argparse

import pytest
import torch

from echofm.bench import model as bench
from echofm.model import MaskedAutoencoderViT, ModelConfig

from tests.factories.model import make_video, seeded

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_measure_step_reports_consistent_figures(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    timing = bench.measure_step(model, 2, steps=3, warmup=1)
    assert len(timing.step_seconds) == 3
    assert min(timing.step_seconds) <= timing.seconds_per_step <= max(timing.step_seconds)
    assert timing.clips_per_second == pytest.approx(2 / timing.seconds_per_step)
    assert timing.peak_memory_bytes >= 0 and timing.label == "fused"
    assert all(p.grad is None for p in model.parameters())  # leaves the model clean
    with pytest.raises(ValueError):
        bench.measure_step(model, 2, dtype="fp16")


def test_variants_are_interleaved_and_the_setting_restored(micro_config: ModelConfig) -> None:
    model = MaskedAutoencoderViT(micro_config)
    bench.set_fused_attention(model, True)
    seen: list[bool] = []

    def record(fused: bool) -> None:
        bench.set_fused_attention(model, fused)
        seen.append(fused)

    variants = {"fused": bench.StepVariant(model, lambda: record(True)),
                "unfused": bench.StepVariant(model, lambda: record(False))}
    timings = bench.measure_variants(variants, 1, steps=3, warmup=1)
    assert list(timings) == ["fused", "unfused"]
    assert all(t.label == label for label, t in timings.items())
    assert all(len(t.step_seconds) == 3 for t in timings.values())
    # Warm-up of each, then ABBA order: a load change hits both variants alike.
    assert seen == [True, False, True, False, False, True, True, False]
    assert all(m.attn.fused_attn for m in model.blocks)


def test_unfused_attention_computes_the_same_function(micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(micro_config).eval()
    video = make_video(micro_config)
    with torch.no_grad():
        fused = model(video, generator=seeded(0)).pred
        layers = bench.set_fused_attention(model, False)
        unfused = model(video, generator=seeded(0)).pred
    # Encoder and decoder blocks, plus the slice projector's block.
    assert layers == micro_config.depth + micro_config.decoder_depth + 1
    assert all(not m.attn.fused_attn for m in model.blocks)
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-4)


def _run_command(capsys, *extra: str) -> str:
    """`echofm bench model` at a micro size with `extra` options; its printed output."""
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--preset", "tiny", "--batch", "1", "--steps", "1", "--warmup", "0",
                              "--img-size", "32", "--num-frames", "8", *extra])
    assert bench.run(args) == 0
    return capsys.readouterr().out


def test_command_prints_every_variant_and_the_ratios(capsys) -> None:
    out = _run_command(capsys, "--flops")
    assert "echofm (SDPA)" in out and "echofm unfused" in out and "published EchoFM" in out
    assert "speed-up of fused over unfused attention:" in out
    assert "speed-up over the published EchoFM step:" in out
    assert "model FLOPs/step" in out and "published EchoFM FLOPs/step" in out


def test_attention_comparison_leaves_the_reference_out(capsys) -> None:
    out = _run_command(capsys, "--compare", "attention")
    assert "echofm unfused" in out and "published" not in out


def test_an_optimizer_step_is_part_of_the_timed_step(micro_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = MaskedAutoencoderViT(micro_config)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    variant = bench.StepVariant(model, optimizer=optimizer)
    bench.measure_variants({"fused": variant}, 1, steps=1, warmup=0)
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert any(changed)


def test_command_with_optimizer_says_what_it_timed(capsys) -> None:
    out = _run_command(capsys, "--optimizer")
    assert "step=forward+backward+AdamW" in out and "published EchoFM" in out
