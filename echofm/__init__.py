"""EchoFM pipeline: echocardiography archives to a video foundation model.

Heavy dependencies (torch, pydicom, pyarrow) are imported by the modules that need them, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from echofm.data.manifest import load_clip

__all__ = ["load_clip", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load_clip":
        from echofm.data.manifest import load_clip

        return load_clip
    raise AttributeError(name)
