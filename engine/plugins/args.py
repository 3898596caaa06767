"""An extension's arguments, declared once as a pydantic model (docs/design.md, example 4, for
extensions): the model gives their names and order (A1111 clients send `script_args` as a list in
that order), their defaults, the ranges the UI's controls take (`engine.schema.params.field_limits`)
and the validation that the UI and the API both get."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class ExtensionArgs(BaseModel):
    """Base of an extension's argument model: unknown names and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class ArgsError(ValueError):
    """A value the argument model refuses; `field` names it (None: the whole set)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message


def arg_values(model: type[BaseModel], values: Any) -> dict[str, Any]:
    """Every argument by name, validated: `values` is None, a list in the model's field order, or
    an object of name: value; what it leaves out takes the model's default."""
    names = list(model.model_fields)
    if values is None:
        data: dict[str, Any] = {}
    elif isinstance(values, list | tuple):
        if len(values) > len(names):
            raise ArgsError(
                None, f"{len(values)} args given, this takes at most {len(names)}: {', '.join(names)}"
            )
        data = dict(zip(names, values, strict=False))
    elif isinstance(values, Mapping):
        data = dict(values)
    else:
        raise ArgsError(None, "args must be a list (in the UI's order) or an object of name: value")
    try:
        return model.model_validate(data).model_dump()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        if error["type"] == "extra_forbidden":
            raise ArgsError(field, f"unknown arg; known: {', '.join(names)}") from None
        raise ArgsError(field, error["msg"]) from None
