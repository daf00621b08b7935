"""The synthetic echo archive (`echofm synth`): DICOM/MP4/AVI cines with labels, LV masks and planted PHI.

Test and demo data only: the production loaders never import it.
"""
