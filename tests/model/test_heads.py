"""Downstream heads: shapes, gradients, config round trip, and that each head can fit a signal."""

from __future__ import annotations

import pytest
import torch

from echofm.model import build_model
from echofm.model.heads import HEAD_KINDS, HeadConfig, HeadConfigError, build_head

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GRID = (2, 4, 4)
D = 32


def _config(kind: str, out_dim: int = 3) -> HeadConfig:
    return HeadConfig(kind=kind, embed_dim=D, out_dim=out_dim, hidden_dim=16, num_heads=4, grid=GRID,
                      num_frames=8, img_size=32, patch_size=8)


def _input(kind: str, batch: int = 2) -> torch.Tensor:
    head = build_head(_config(kind))
    t, h, w = GRID
    return torch.randn(batch, D) if head.input_kind == "features" else torch.randn(batch, 1 + t * h * w, D)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_shapes_and_gradients(kind: str) -> None:
    torch.manual_seed(0)
    head = build_head(_config(kind))
    x = _input(kind).requires_grad_(True)
    out = head(x)
    expected = (2, 3, 8, 32, 32) if kind == "segmentation" else (2, 3)  # segmentation: 3 class logits per pixel
    assert out.shape == expected
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_config_round_trip_rebuilds_same_outputs(kind: str) -> None:
    torch.manual_seed(0)
    head = build_head(_config(kind)).eval()
    rebuilt = build_head(HeadConfig.from_dict(head.config.to_dict())).eval()
    rebuilt.load_state_dict(head.state_dict())
    x = _input(kind)
    torch.testing.assert_close(head(x), rebuilt(x))


def test_heads_take_the_encoder_outputs() -> None:
    encoder = build_model("tiny", img_size=32, num_frames=8, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                          decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2).eval()
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        tokens, features = encoder.forward_tokens(video), encoder.forward_features(video)
    assert build_head(_config("attentive"))(tokens).shape == (2, 3)
    assert build_head(_config("mlp"))(features).shape == (2, 3)
    assert build_head(_config("segmentation", out_dim=1))(tokens).shape == (2, 8, 32, 32)  # one mask's logits


def test_attentive_pooling_finds_the_informative_token() -> None:
    # Only one patch token (slot 5) carries the label; mean pooling over 33 tokens dilutes it,
    # attention can single it out. The head must reach near-perfect accuracy.
    torch.manual_seed(0)
    n, t, h, w = 64, *GRID
    tokens = torch.randn(n, 1 + t * h * w, D) * 0.5
    labels = torch.randint(0, 2, (n,))
    tokens[:, 6, 0] = labels.float() * 4 - 2
    tokens[:, 6, 1] = 3.0  # a marker the query can attend to
    head = build_head(_config("attentive", out_dim=2))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(head(tokens), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (head(tokens).argmax(1) == labels).float().mean() > 0.95


def test_segmentation_head_rejects_wrong_token_count_and_bad_config() -> None:
    head = build_head(_config("segmentation"))
    with pytest.raises(HeadConfigError):
        head(torch.randn(1, 10, D))
    with pytest.raises(HeadConfigError):
        HeadConfig(kind="segmentation", embed_dim=D)
    with pytest.raises(HeadConfigError):
        HeadConfig(kind="pooling", embed_dim=D)
