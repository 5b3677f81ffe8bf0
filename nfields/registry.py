"""A small name -> (class, config dataclass) registry, so methods are picked by name, not if-chains."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable, Generic, TypeVar

from .errors import NfieldsError

T = TypeVar("T")


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[type[T], type]] = {}

    def register(self, name: str, config: type) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = (cls, config)
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def lookup(self, name: str) -> tuple[type[T], type]:
        if name not in self._entries:
            raise NfieldsError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; "
                f"choose one of: {', '.join(self.names())}."
            )
        return self._entries[name]

    def config(self, name: str, options: dict[str, Any] | None = None):
        """The config dataclass of `name` with `options` applied and type-checked."""
        _, config_cls = self.lookup(name)
        return build_dataclass(config_cls, options or {}, what=f"{self.kind} '{name}'")


def build_dataclass(cls: type, options: dict[str, Any], what: str):
    """cls(**options), with unknown keys and wrongly typed values turned into NfieldsError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in options:
        if key not in fields:
            raise NfieldsError(
                f"{what} has no option '{key}'{did_you_mean(key, fields)}; "
                f"its options are: {', '.join(fields)}."
            )
    typed = {k: coerce(v, fields[k].type, f"{what} option '{k}'") for k, v in options.items()}
    for key, value in typed.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NfieldsError(f"{what} option '{key}' must be a finite number, not {value}.")
        limits = getattr(cls, "limits", {}).get(key)
        if limits is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            limits.check(value, f"{what} option '{key}'")
    return cls(**typed)


@dataclasses.dataclass(frozen=True)
class Limits:
    """The range an option's value must lie in: low <= value (low < value if `strict`) and value <= high.
    A config dataclass lists them as `limits: ClassVar[dict[str, Limits]]`; `build_dataclass` checks them."""

    low: float | None = None
    high: float | None = None
    strict: bool = False

    def check(self, value: float, what: str) -> None:
        low_ok = self.low is None or (value > self.low if self.strict else value >= self.low)
        if low_ok and (self.high is None or value <= self.high):
            return
        if self.low is not None and self.high is not None:
            rule = f"from {self.low:g} to {self.high:g}"
        elif self.low is not None:
            rule = f"greater than {self.low:g}" if self.strict else f"at least {self.low:g}"
        else:
            rule = f"at most {self.high:g}"
        raise NfieldsError(f"{what} must be {rule}, not {value:g}.")


#: Common limits: a count of at least one (widths), of zero or more (hidden layers), a positive number.
AT_LEAST_ONE = Limits(1)
NOT_NEGATIVE = Limits(0)
POSITIVE = Limits(0, strict=True)


def coerce(value: Any, annotation: Any, what: str) -> Any:
    """Convert strings from the command line (and JSON numbers) to the annotated scalar type."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kind = kind.replace(" ", "")
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "str":
            return str(value)
    except (TypeError, ValueError):
        raise NfieldsError(f"{what} must be a {kind}, not {value!r}.") from None
    return value
