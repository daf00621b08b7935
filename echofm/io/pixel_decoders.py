"""Which pydicom decoding plugin decodes each compressed transfer syntax.

pydicom tries the installed plugins in its own order, and that order puts GDCM first wherever GDCM
is installed. GDCM is here for what nothing else installed decodes (JPEG Lossless Process 14,
exactly), so this table lists it last: every other syntax keeps the decoder it was validated with
(docs/io.md). The first installed plugin of a syntax's list that can decode the
file's sample precision is used; a syntax missing from the table is left to pydicom's choice.
"""

from __future__ import annotations

from functools import cache

from pydicom import uid
from pydicom.pixels import get_decoder

PLUGIN_PREFERENCE: dict[str, tuple[str, ...]] = {
    uid.JPEGBaseline8Bit: ("pillow", "gdcm"),
    uid.JPEGExtended12Bit: ("pillow", "gdcm"),
    uid.JPEGLossless: ("gdcm",),
    uid.JPEGLosslessSV1: ("gdcm",),
    uid.JPEGLSLossless: ("pyjpegls", "gdcm"),
    uid.JPEGLSNearLossless: ("pyjpegls", "gdcm"),
    uid.JPEG2000Lossless: ("pylibjpeg", "pillow", "gdcm"),
    uid.JPEG2000: ("pylibjpeg", "pillow", "gdcm"),
    uid.RLELossless: ("pylibjpeg", "pydicom"),
}
# Plugins pydicom lists for a syntax that decode only some sample precisions: (plugin, syntax) ->
# the largest BitsStored they decode: the libjpeg builds inside Pillow and pydicom's GDCM plugin
# take 8-bit JPEG Extended only, so no installed plugin decodes 12-bit JPEG Extended.
_MAX_BITS_STORED: dict[tuple[str, str], int] = {("pillow", uid.JPEGExtended12Bit): 8, ("gdcm", uid.JPEGExtended12Bit): 8}


@cache
def installed_plugins(transfer_syntax: str) -> frozenset[str]:
    """Names of the installed pydicom plugins for a syntax (empty when pydicom has none)."""
    try:
        decoder = get_decoder(uid.UID(transfer_syntax))
    except (NotImplementedError, ValueError):
        return frozenset()
    return frozenset(decoder.available_plugins)


@cache
def decoding_plugin(transfer_syntax: str, bits_stored: int | None = None) -> str | None:
    """The plugin to decode `transfer_syntax` with: a name, "" for native (uncompressed) data or a
    syntax this table leaves to pydicom, None when no installed plugin decodes it (at
    `bits_stored`, when given). Cached: plugins do not come and go while a worker runs.
    """
    ts = uid.UID(transfer_syntax)
    try:
        decoder = get_decoder(ts)
    except (NotImplementedError, ValueError):
        return None
    if decoder.is_native:
        return ""
    installed = installed_plugins(ts)
    preference = PLUGIN_PREFERENCE.get(ts)
    if preference is None:
        return "" if installed else None
    for plugin in preference:
        limit = _MAX_BITS_STORED.get((plugin, ts))
        if plugin in installed and (bits_stored is None or limit is None or bits_stored <= limit):
            return plugin
    return None
