"""Config dataclass fields that carry their help text and choices: one source for the CLI flags, the app's forms
and the configs' own checks."""

import argparse
import types
import typing
from dataclasses import field, fields

DEVICES = ("auto", "cpu", "cuda")  # 'auto': CUDA (bf16 when supported) when present, else CPU
PRECISIONS = ("auto", "bf16", "fp32")  # 'auto': bf16 where the device computes it natively (`training_choice`)
PRECISION_HELP = (
    "'auto': bf16 autocast where the device computes bf16 natively (a bf16 GPU; a CPU with AVX512-BF16 or AMX,"
    " where reward-model and SFT steps measured 1.6-1.8x faster than fp32), else fp32; 'bf16' or 'fp32' to choose"
)


def documented(default, text: str, choices: tuple[str, ...] | None = None):
    """Return a dataclass field whose help text (and allowed values) the CLI flags and the app's forms show."""
    metadata = {"help": text} | ({"choices": tuple(choices)} if choices else {})
    return field(default=default, metadata=metadata)


def flag_type(config_field) -> type:
    """Return what argparse converts a field's flag with (the non-None part of `X | None`)."""
    annotation = config_field.type
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def check_choices(config) -> None:
    """Raise ValueError naming the first field whose value is not one of its declared choices."""
    for spec in fields(config):
        choices = spec.metadata.get("choices")
        value = getattr(config, spec.name)
        if choices and value not in choices:
            raise ValueError(f"unknown {spec.name} {value!r}; expected one of {choices}")


def add_flag(parser, spec, text: str, default=None, aliases=(), choices: bool = True) -> None:
    """Add a config field's command-line flag: `--name-with-dashes` of the field's type, its choices (unless the
    flag serves fields of several configs that differ in them), a bool as `--name`/`--no-name`."""
    flag = "--" + spec.name.replace("_", "-")
    if flag_type(spec) is bool:
        parser.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=default, help=text)
        return
    allowed = spec.metadata.get("choices") if choices else None
    parser.add_argument(
        flag, *aliases, dest=spec.name, type=flag_type(spec), choices=allowed, default=default, help=text
    )
