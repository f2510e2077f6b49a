"""Config dataclass fields that carry their help text, and the argparse type of each: one source for CLI and forms."""

import types
import typing
from dataclasses import field


def documented(default, text: str):
    """Return a dataclass field whose help text (`metadata["help"]`) the CLI flags and the app's forms show."""
    return field(default=default, metadata={"help": text})


def flag_type(config_field) -> type:
    """Return what argparse converts a field's flag with (the non-None part of `X | None`)."""
    annotation = config_field.type
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation
