"""Command-line flags built from a stage's options model (`echofm.options.Options`).

A flag takes its name (`--batch-size` for `batch_size`), type, choices (a `Literal`), help (the
field's description) and shown default from the field; the default itself stays in the model:
a flag the user leaves out is absent from the parsed arguments, so building the model applies
its own default, and bounds are checked there, with the stage's error.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

# Unset flags leave no attribute; `_given` collects the ones present.
_UNSET = argparse.SUPPRESS
# What every `--encoder` flag takes (what `echofm.model.load_pretrained` reads).
ENCODER_HELP = ("pretraining RUN_DIR, a checkpoint, an export folder, models:/echofm-encoder@champion, or a "
                "published checkpoint (EchoFM, MAE-ST, VideoMAE, timm ViT; .pth/.pt/.pyth/.bin/.safetensors)")


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """The argparse type and choices of a scalar annotation (a Literal gives choices)."""
    if typing.get_origin(annotation) is Literal:
        values = typing.get_args(annotation)
        return type(values[0]), values
    if annotation in (int, float, str):
        return annotation, None
    raise TypeError(f"no command-line form for {annotation!r}")


def _help(field: FieldInfo, shown_default: Any) -> str:
    text = (field.description or "").replace("%", "%%")
    if shown_default is not None and shown_default != ():
        shown = " ".join(map(str, shown_default)) if isinstance(shown_default, (list, tuple)) else shown_default
        text = f"{text} (default {shown})" if text else f"default {shown}"
    return text


def add_option_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    fields: Iterable[str],
    *,
    flags: Mapping[str, str] | None = None,
    dest_prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One flag per field of `model` named in `fields`.

    flags: flag spellings that differ from `--field-name` (a bool field that defaults to True
        gets `--no-field-name` unless renamed). dest_prefix: prefix of the parsed attribute, so
        two models' `batch_size` can share a parser. defaults: values that replace the model's
        default for this command (shown in its help, and passed on as if given).
    """
    flags = dict(flags or {})
    defaults = dict(defaults or {})
    for name in fields:
        field = model.model_fields[name]
        annotation = _strip_optional(field.annotation)
        default = defaults.get(name, field.get_default(call_default_factory=True))
        dest = dest_prefix + name
        kwargs: dict[str, Any] = {"dest": dest, "default": defaults.get(name, _UNSET)}
        if annotation is bool:
            flag = flags.get(name) or (f"--no-{name.replace('_', '-')}" if default else f"--{name.replace('_', '-')}")
            kwargs["action"] = "store_false" if default else "store_true"
            parser.add_argument(flag, help=(field.description or "").replace("%", "%%"), **kwargs)
            continue
        flag = flags.get(name) or f"--{name.replace('_', '-')}"
        origin = typing.get_origin(annotation)
        if origin in (list, tuple):
            kwargs["type"], kwargs["choices"] = _scalar(typing.get_args(annotation)[0])
            kwargs["nargs"] = "+"
        else:
            kwargs["type"], kwargs["choices"] = _scalar(annotation)
        text = _help(field, default)
        if not kwargs["choices"]:
            kwargs["metavar"] = name.upper()  # not the prefixed destination
        elif kwargs.get("nargs"):
            # A long list of choices reads better in the help than in the usage line.
            kwargs["metavar"] = name.rstrip("s").upper()
            text += f"; of {' '.join(map(str, kwargs['choices']))}"
        if field.is_required() and name not in defaults:
            kwargs["required"] = True
        parser.add_argument(flag, help=text, **kwargs)


def given_options(args: argparse.Namespace, model: type[BaseModel], *, dest_prefix: str = "") -> dict[str, Any]:
    """The `model` fields the command line set (flags given, or defaults the command replaced)."""
    found = {}
    for name in model.model_fields:
        dest = dest_prefix + name
        if hasattr(args, dest):
            found[name] = getattr(args, dest)
    return found


def add_secret_file_flag(parser: argparse.ArgumentParser) -> None:
    """`--secret-file FILE` of the commands that need the de-identification secret to read what
    ingestion keyed (labels named by path); ingestion's own comes from `IngestConfig`."""
    from echofm.ingest.config import SECRET_FILE_HELP

    parser.add_argument("--secret-file", default=None, metavar="FILE", help=SECRET_FILE_HELP)


def usage_error_message(exc: Exception, args: argparse.Namespace) -> str:
    """One line for a usage error: this project's text for its own errors; for a missing file, its
    name only when the command line named it (a file named inside a label table may carry a
    patient's name); the class alone for anything else."""
    from echofm.boundary import public_message

    given = {str(value) for value in vars(args).values() if isinstance(value, (str, Path))}
    if isinstance(exc, FileNotFoundError) and exc.filename is not None and str(exc.filename) in given:
        return f"no such file: {exc.filename}"
    return public_message(exc)
