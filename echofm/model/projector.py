"""Per-time-slice CLS summaries for the temporal triplet loss.

EchoFM summarises each time slice with a CLS token: a learned CLS token is put in front of that
slice's visible encoder tokens and the sequence goes through one transformer block shared by all
slices; the block's CLS output is the slice's summary.

Only that CLS output is ever used, so this module computes nothing else. Per slice, a pre-norm
block's CLS output needs the keys and values of every token in the sequence, but the query,
attention, output projection and MLP of the CLS row alone. All `t` slices go through one masked
attention call: the CLS query of slice i may attend to the CLS itself and to the tokens of slice i
only, which is exactly the attention of the separate per-slice sequence. The result equals timm's
`Block` run on each `[CLS, tokens of slice i]` (a test compares them) at about a sixth of a
block's cost over the visible tokens instead of a whole block per slice, and it works for
random masking, where slices hold different numbers of visible tokens (or none).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.models.vision_transformer import Block


class SliceProjector(nn.Module):
    """One shared transformer block that turns each time slice's visible tokens into a CLS summary.

    Parameters live in `cls_token` `[1, 1, D]`, `block` (a timm `Block`, so its weights have the
    usual layout, and a checkpoint of the published per-slice projector block maps onto it) and
    `norm`, the LayerNorm applied to each summary (the published projector used the encoder's
    final norm there).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.block = Block(dim, num_heads, mlp_ratio, qkv_bias=True,
                           norm_layer=partial(nn.LayerNorm, eps=1e-6))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(
        self, tokens: torch.Tensor, slice_index: torch.Tensor, num_slices: int
    ) -> torch.Tensor:
        """Normalised CLS output of the block for every slice.

        Args:
            tokens: `[B, N, D]` visible encoder tokens (no encoder CLS), any order.
            slice_index: `[B, N]` int64, the time slice (0..t-1) of each token.
            num_slices: `t`.

        Returns:
            `[B, t, D]`; a slice without visible tokens gets the CLS token's own output (the same
            for every such slice: callers mark those slices invalid by their token count).
        """
        block, attn = self.block, self.block.attn
        batch, _, dim = tokens.shape
        heads = attn.num_heads
        cls = self.cls_token.to(tokens.dtype).expand(batch, -1, -1)  # [B, 1, D]
        sequence = torch.cat([cls, tokens], dim=1)  # [B, 1 + N, D]
        # The fused qkv weight stacks the q, k and v projections (rows 0:D, D:2D, 2D:3D).
        weight, bias = attn.qkv.weight, attn.qkv.bias
        query = F.linear(block.norm1(cls), weight[:dim], bias[:dim])  # [B, 1, D]
        keys_values = F.linear(block.norm1(sequence), weight[dim:], bias[dim:])  # [B, 1+N, 2D]
        q = rearrange(query, "b one (h e) -> b h one e", h=heads)
        k, v = rearrange(keys_values, "b n (two h e) -> two b h n e", two=2, h=heads)
        q, k = attn.q_norm(q), attn.k_norm(k)
        # allowed[b, i, j]: slice i's CLS may see sequence position j (its CLS, its own tokens).
        slices = torch.arange(num_slices, device=tokens.device)
        own = slice_index.unsqueeze(1) == slices.view(1, -1, 1)  # [B, t, N]
        allowed = torch.cat([own.new_ones(batch, num_slices, 1), own], dim=2)
        mixed = F.scaled_dot_product_attention(
            q.expand(-1, -1, num_slices, -1), k, v, attn_mask=allowed.unsqueeze(1)
        )  # [B, h, t, e]
        x = attn.proj(attn.norm(rearrange(mixed, "b h t e -> b t (h e)")))
        x = cls + block.drop_path1(block.ls1(x))  # [B, t, D]
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return self.norm(x)
