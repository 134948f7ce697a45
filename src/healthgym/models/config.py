"""What every family's settings dataclass shares: a device to resolve and a JSON round trip."""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

C = TypeVar("C", bound="ConfigBase")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base of `HealthGymConfig`, `GANConfig` and `V1Config` (frozen dataclasses).

    Subclasses declare their fields, ``device`` among them, and validate in __post_init__.
    """

    def resolve_device(self) -> torch.device:
        """The torch device named by ``device`` ("auto" prefers CUDA)."""
        return resolve_device(self.device)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: tuples become lists."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Inverse of `to_dict`; unknown keys are an error, missing keys take defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__} settings must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        hints = typing.get_type_hints(cls)
        for name, value in d.items():
            if not _is_a(value, hints[name]):
                raise ValueError(
                    f"setting {name!r} must be {_describe_type(hints[name])}, got {value!r}"
                )
        try:
            return cls(**d)
        except TypeError as e:  # a check in __post_init__ met a value it could not compare
            raise ValueError(f"{cls.__name__} settings: {e}") from None

    def check_positive(self, *names: str) -> None:
        """ValueError naming the first of ``names`` that is not > 0."""
        for name in names:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def resolve_device(device: str) -> torch.device:
    """The torch device ``device`` names ("auto" prefers CUDA); a ValueError, before any work,
    for a name torch does not know or a device this machine lacks."""
    import torch  # here, not at import: settings load without torch (the CLI's start-up)

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {device!r} is not a device: give auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: this machine's torch ({torch.__version__}) sees no CUDA "
                "GPU; use cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                "numbered from 0"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: healthgym runs on cpu or cuda")
    return dev


def _is_a(value: Any, tp: Any) -> bool:
    """Whether a JSON-read ``value`` fits the field type ``tp`` (an int is a float; a list a
    tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_is_a(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _is_a(v, a) for v, a in zip(value, args, strict=True)
        )
    return True  # a type this check does not know: __post_init__ validates it


def _describe_type(tp: Any) -> str:
    """'an integer', 'a number', 'a list of 2 numbers or null', ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe_type(args[0]).split(' ', 1)[1]}s"
        return f"a list of {len(args)} {_describe_type(args[0]).split(' ', 1)[1]}s"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number"}
    return names.get(tp, "text" if tp is str else getattr(tp, "__name__", str(tp)))
