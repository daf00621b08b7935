"""The representation report: is a frozen encoder better than random init, and is it collapsed?

`measures.py` (mean cosine, RankMe, augmented-view gap, slice self-similarity), `probes.py`
(leave-one-patient-out kNN and ridge probes), `embed.py` (clip and slice embeddings, augmented
views), `labels.py` (the probe label table), `report.py` (`compare_encoders`,
`RepresentationReport`), `evaluate.py` (any encoder on a shards directory, `evaluate_encoder`)
and `gate.py` (the promotion gate). Imports no downstream or registry module, so pretraining can
measure itself. docs/representation.md says what each measure means and what was measured.
"""
