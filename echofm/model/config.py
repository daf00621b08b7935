"""The frozen configuration every `MaskedAutoencoderViT` is built from.

A checkpoint stores `dataclasses.asdict(config)`, so the model can be rebuilt from the file alone;
keep every field a plain int/float/str/bool for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from echofm.errors import ModelError

MASK_MODES: tuple[str, ...] = ("random", "tube")
# How the temporal triplet picks its pairs (both on the projector's per-slice summaries):
# "phase": positive = a slice of the same clip at the same cardiac phase by a pixel-space prior,
# negative = the hardest slice of another clip in the batch (`phase_triplet.py`); "self": the
# seed's design, positives and negatives of slice 0 split by the summaries' own similarity
# (`triplet.py`), which the projector satisfies by itself within a few dozen steps.
TRIPLET_MODES: tuple[str, ...] = ("phase", "self")


class ModelConfigError(ModelError, ValueError):
    """A model configuration is inconsistent (sizes that do not divide, ratios out of range)."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Sizes and loss settings of the spatiotemporal MAE + temporal triplet model.

    Video input is `[B, in_chans, num_frames, img_size, img_size]`; a tubelet of
    `t_patch_size x patch_size x patch_size` pixels becomes one token, so the token grid is
    `(num_frames // t_patch_size, img_size // patch_size, img_size // patch_size)`.
    """

    img_size: int = 224
    num_frames: int = 32
    patch_size: int = 16
    t_patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    # Fraction of tokens hidden from the encoder during pretraining, in [0, 1).
    mask_ratio: float = 0.75
    # "random": independent per token; "tube": one spatial keep-set shared by every time slice.
    mask_mode: str = "random"
    # Normalise each target patch by its own mean/std before the MSE (MAE's best setting).
    norm_pix_loss: bool = False
    triplet_mode: str = "phase"
    triplet_weight: float = 1.0
    # Margin of the triplet loss, in cosine-similarity units (similarity lies in [-1, 1]).
    triplet_margin: float = 0.2
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "img_size", "num_frames", "patch_size", "t_patch_size", "in_chans", "embed_dim",
            "depth", "num_heads", "decoder_embed_dim", "decoder_depth", "decoder_num_heads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelConfigError(f"{name} must be a positive int, got {value!r}")
        if self.img_size % self.patch_size:
            raise ModelConfigError(
                f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}"
            )
        if self.num_frames % self.t_patch_size:
            raise ModelConfigError(
                f"num_frames {self.num_frames} is not divisible by t_patch_size {self.t_patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ModelConfigError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ModelConfigError(
                f"decoder_embed_dim {self.decoder_embed_dim} is not divisible by "
                f"decoder_num_heads {self.decoder_num_heads}"
            )
        if not self.mlp_ratio > 0:
            raise ModelConfigError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ModelConfigError(f"mask_ratio must lie in [0, 1), got {self.mask_ratio!r}")
        if self.mask_mode not in MASK_MODES:
            raise ModelConfigError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if self.triplet_mode not in TRIPLET_MODES:
            raise ModelConfigError(f"triplet_mode must be one of {TRIPLET_MODES}, got {self.triplet_mode!r}")
        if not self.triplet_weight >= 0:
            raise ModelConfigError(f"triplet_weight must be >= 0, got {self.triplet_weight!r}")
        if not self.triplet_margin >= 0:
            raise ModelConfigError(f"triplet_margin must be >= 0, got {self.triplet_margin!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ModelConfigError(f"drop_path_rate must lie in [0, 1), got {self.drop_path_rate!r}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid `(t, h, w)`: time slices, rows and columns of tubelets."""
        side = self.img_size // self.patch_size
        return (self.num_frames // self.t_patch_size, side, side)

    @property
    def num_patches(self) -> int:
        """Tokens per clip, `L = t * h * w` (1568 for 32 x 224 x 224 with 4 x 16 x 16 tubelets)."""
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_dim(self) -> int:
        """Pixel values per tubelet: `t_patch_size * patch_size**2 * in_chans`."""
        return self.t_patch_size * self.patch_size**2 * self.in_chans
