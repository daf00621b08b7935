from __future__ import annotations

import numpy as np
import pytest

from echofm.data.codec import CODECS, DEFAULT_CODEC, CodecError, decode_clip, encode_clip


def _speckle_clip(channels: int, seed: int = 0) -> np.ndarray:
    """A small clip with speckle inside a disc and zeros outside: `[8, 64, 64, C]`.

    Colour clips are tinted grey speckle with a red (colour-flow-like) patch, as colour echo is.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
    base = rng.rayleigh(40.0, size=(8, 64, 64, 1))
    base[:, 1:] = 0.5 * (base[:, 1:] + base[:, :-1])  # some spatial correlation, as real speckle has
    if channels == 3:
        base = base * np.array([1.0, 0.9, 0.8])
        base[:, 20:36, 20:36, 0] = 200.0
    frames = np.clip(base + 40, 0, 255).astype(np.uint8)
    return frames * inside[None, :, :, None].astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_every_codec(name, channels):
    clip = _speckle_clip(channels)
    extension, data = encode_clip(clip, name)
    assert extension.startswith("frames.") and isinstance(data, bytes)
    decoded = decode_clip({"__key__": "abc", extension: data, "meta.json": b"{}"})
    assert decoded.dtype == np.uint8 and decoded.shape == clip.shape
    if CODECS[name].lossless:
        np.testing.assert_array_equal(decoded, clip)
    else:
        assert _psnr(decoded, clip) > 30.0
        # Colour order survives the BGR round trip: the channel means stay in place.
        np.testing.assert_allclose(decoded.mean(axis=(0, 1, 2)), clip.mean(axis=(0, 1, 2)), atol=2.0)


def test_extensions_are_unique_and_default_is_registered():
    assert DEFAULT_CODEC in CODECS
    assert len({c.extension for c in CODECS.values()}) == len(CODECS)


def test_decode_picks_codec_from_extension_alone():
    clip = _speckle_clip(1, seed=1)
    samples = [dict([encode_clip(clip, name)]) for name in CODECS]
    for sample in samples:
        assert decode_clip(sample).shape == clip.shape


def test_errors_are_specific():
    clip = _speckle_clip(1)
    with pytest.raises(CodecError, match="unknown codec"):
        encode_clip(clip, "gif")
    with pytest.raises(CodecError):
        encode_clip(clip.astype(np.float32), "npy")
    with pytest.raises(CodecError, match="exactly one"):
        decode_clip({"meta.json": b"{}"})
    with pytest.raises(CodecError, match="no codec"):
        decode_clip({"frames.gif": b"GIF89a"})
    ext, data = encode_clip(clip, "jpeg")
    with pytest.raises(CodecError):
        decode_clip({ext: data[:-10]})
    ext, data = encode_clip(clip, "zlib")
    with pytest.raises(CodecError):
        decode_clip({ext: data[: len(data) // 2]})


def test_codec_benchmark_measures_every_codec():
    from echofm.bench.codec import benchmark_clips, format_table, measure_codecs, speckle_clips

    (clip,) = benchmark_clips(1, size=64)
    assert clip.dtype == np.uint8 and clip.shape[:3] == (32, 64, 64) and clip.shape[3] in (1, 3)
    assert clip[:, 0, 0].max() == 0  # masked exterior and padding are zero
    figures = measure_codecs(speckle_clips(2, size=48), repeats=1)
    assert [f.name for f in figures] == list(CODECS)
    by_name = {f.name: f for f in figures}
    assert list(by_name["npy"].kinds) == ["grey"]
    assert by_name["npy"].kinds["grey"].bytes_per_clip == 32 * 48 * 48 + 128  # pixels plus the .npy header
    assert by_name["zlib"].kinds["grey"].bytes_per_clip < by_name["npy"].kinds["grey"].bytes_per_clip
    assert by_name["jpeg"].min_psnr_db < float("inf") == by_name["zlib"].min_psnr_db
    assert all(k.decode_per_s > 0 and k.encode_per_s > 0 for f in figures for k in f.kinds.values())
    table = format_table(figures)
    assert table.count("\n") == len(figures) + 1 and "| zlib | yes |" in table
