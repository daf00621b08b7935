"""Public echo datasets in their published layouts (EchoNet-Dynamic, EchoNet-Pediatric,
EchoNet-LVH, CAMUS, TMED-2, MIMIC-IV-ECHO): each one's definition (`catalog.DATASETS`) reads its
label files, `prepare.prepare_dataset` ingests its videos and writes OUT/labels.parquet.
See docs/datasets.md."""
