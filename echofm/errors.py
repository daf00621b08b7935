"""The exception hierarchy: `EchoFMError`, one base per package under it, specific classes below.

A command catches a package's base (or `EchoFMError`) and prints the error's message as one
line; the specific class tells a program what went wrong. The specific classes live beside the
code that raises them and say what the user can do about it; many also derive from the builtin
class that fits (`ValueError`, `FileNotFoundError`, ...), so generic handlers keep working.

    EchoFMError
    ├── EchoIOError        echofm.io: a file that cannot become a clip (echofm/io/errors.py)
    ├── DataError          echofm.data: codecs, shards, manifest, the training loader
    ├── PreprocessError    echofm.preprocess: sector masks, windows, clip preparation
    ├── ModelError         echofm.model: configs, presets, checkpoints, heads, input shapes
    ├── IngestError        echofm.ingest: SOURCE/OUTPUT, view classifiers, the data contract
    ├── TrainingError      echofm.pretrain: options, checkpoints and resuming, the torchrun job
    ├── RepresentationError echofm.representation: embeddings, probes, probe labels, the gate
    ├── DownstreamError    echofm.downstream: tasks, labels, splits, encoders, fine-tuning
    ├── DatasetError       echofm.datasets: public datasets in their published layouts
    ├── RegistryError      echofm.registry: registration, promotion, registered models
    ├── PredictError       echofm.predict: the models an archive is scored with, the prediction tables
    ├── StoreError         echofm.store: tracking store and model-URI names
    └── SynthError         echofm.synth: the synthetic archive generator

This module imports nothing, so every layer (`echofm.store` included) may use it.
"""

from __future__ import annotations


class EchoFMError(Exception):
    """Base of every error this project raises on purpose; its message is one line for a user."""


class DataError(EchoFMError):
    """Stored data (shards, manifest, codec payloads) cannot be read or written as asked."""


class PreprocessError(EchoFMError):
    """Frames or clips that the preprocessing stages cannot work on."""


class ModelError(EchoFMError):
    """A model configuration, preset, checkpoint or input that does not fit the model."""


class IngestError(EchoFMError):
    """An ingestion run that cannot proceed (systemic, not one file's problem)."""


class TrainingError(EchoFMError):
    """A pretraining run that cannot start, resume or finish."""


class RepresentationError(EchoFMError):
    """Embeddings, probe labels or a gate that the representation report cannot measure with."""


class DownstreamError(EchoFMError):
    """A downstream task, label table, split or encoder that cannot serve fine-tuning or evaluation."""


class DatasetError(EchoFMError):
    """A public dataset whose layout does not match its published form, or that cannot be prepared."""


class RegistryError(EchoFMError, RuntimeError):
    """The registry lacks what a step needs (no challenger, versions not comparable, no store)."""


class PredictError(EchoFMError):
    """An archive cannot be scored as asked (a model that is not there or answers no task, an
    output whose predictions cannot be read or written)."""


class StoreError(EchoFMError):
    """A tracking-store location or model URI that cannot be used."""


class SynthError(EchoFMError):
    """The synthetic archive cannot be laid out or written as asked."""
