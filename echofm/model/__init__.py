"""The EchoFM model: spatiotemporal MAE + temporal triplet loss, presets and checkpoints.

    from echofm.model import build_model, save_checkpoint, load_checkpoint
    model = build_model("tiny")                 # or "base", "large"; overrides as keywords
    out = model(video)                           # video [B, 3, T, H, W]; out.loss, out.pred ...
    latent = model.encode(video); rec = model.decode(latent)
    emb = model.forward_features(video)          # [B, D], no masking
    model = load_pretrained("vit_base_patch16_224.safetensors")   # any published checkpoint;
    model.load_report.summary()                                   # what was mapped and how
"""

from echofm.model.checkpoint import (
    CheckpointError,
    infer_config,
    load_checkpoint,
    save_checkpoint,
)
from echofm.model.config import MASK_MODES, ModelConfig, ModelConfigError
from echofm.model.mae import (
    ENCODER_PREFIXES,
    EncoderOutput,
    MAEOutput,
    MaskedAutoencoderViT,
    VideoShapeError,
)
from echofm.model.masking import MaskPlan, make_mask, num_visible
from echofm.model.presets import (
    PRESETS,
    UnknownPreset,
    build_model,
    preset_config,
    preset_names,
    random_init,
)
from echofm.model.weights import LoadReport, WeightsError, load_pretrained

__all__ = [
    "CheckpointError",
    "ENCODER_PREFIXES",
    "EncoderOutput",
    "LoadReport",
    "MASK_MODES",
    "MAEOutput",
    "MaskPlan",
    "MaskedAutoencoderViT",
    "ModelConfig",
    "ModelConfigError",
    "PRESETS",
    "UnknownPreset",
    "VideoShapeError",
    "WeightsError",
    "build_model",
    "infer_config",
    "load_checkpoint",
    "load_pretrained",
    "make_mask",
    "num_visible",
    "preset_config",
    "preset_names",
    "random_init",
    "save_checkpoint",
]
