"""Inference on ingested archives: every accepted clip and every study scored with registered models.

- `models.py`: model URIs resolved, pinned to a version and checked before any work;
- `columns.py`: the clip table's columns, one group per task (`<task>.<field>`), by kind;
- `stream.py`: the clips to score streamed from the shards in batches;
- `scoring.py`: plan, score (incrementally, with saved parts) and finish a run over OUT;
- `derived.py`: LV area curve, ED/ES and area-length EF derived from predicted masks;
- `study.py`: the study table aggregated from the clip table;
- `summary.py`: counts for people; `config.py`: `ScoreOptions`.

`flows/score.py` (`score-archive`) and `echofm predict` run it.
"""
