"""The floor of `echofm bench ingest` decodes the same frames the pipeline keeps."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from echofm.bench.ingest import generate_typical_archive
from echofm.bench.ingest_floor import _full_range_luma
from echofm.io import read_video


def test_the_video_floor_gives_the_readers_full_range_grey_frames(tmp_path: Path) -> None:
    # The benchmark's MP4s are studio-range grey: the floor's mapping of the Y plane must give
    # exactly the reader's frames, or it would time cheaper work than the pipeline's.
    archive = generate_typical_archive(tmp_path / "archive", 2)
    video = next(p for p in archive.rglob("*.mp4"))
    indices = [0, 5, 17]
    expected = read_video(video, indices).frames
    assert expected.shape[-1] == 1
    floor = []
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index in indices:
                plane = frame.planes[0]
                luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
                assert frame.color_range != 2  # studio range: the mapping is not the identity
                floor.append(_full_range_luma(frame, luma))
            if index >= indices[-1]:
                break
    np.testing.assert_array_equal(np.stack(floor), expected[..., 0])
