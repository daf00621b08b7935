"""A stage's options, defined once: one frozen Pydantic model per stage.

Each field carries its type, default, bounds and description, once. The same model is the
core's config object, the Prefect flow's parameter (the UI renders it as a form) and the source
of the `echofm` command's flags (`echofm.cli.options` builds them from the fields). Building one
with bad values raises the stage's own error class with one line naming each bad field.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from echofm.errors import EchoFMError

T = TypeVar("T", bound="Options")


def validation_message(error: ValidationError) -> str:
    """Pydantic's report as one line: `field: what is wrong; other_field: ...`."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        what = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)


class Options(BaseModel):
    """Base of every stage's options. `error` is the exception a bad value raises."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    error: ClassVar[type[Exception]] = EchoFMError

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self.error(validation_message(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (JSON, MLflow params, checkpoints loaded with `weights_only`)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return cls(**data)

    def narrow(self, cls: type[T]) -> T:
        """This object's values of the fields `cls` has (a stage's part of a composite form)."""
        return cls(**{name: getattr(self, name) for name in cls.model_fields})

    def replace(self: T, **changes: Any) -> T:
        """A validated copy with `changes` applied."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})
