"""A run folder's `config.json`: the run manifest. It names the run's `kind` and a `format` version beside
the resolved settings, and every read of it (or of a `--config FILE`) checks the type of each setting against
the settings dataclass, so a hand-edited or damaged file is one sentence naming the key, never a traceback.

Runs written before manifests had a kind (no `kind`, no `format`) still load: their kind is inferred from the
keys they hold, as the commands did then.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import NfieldsError

#: The manifest format this version writes (and the newest it reads).
FORMAT = 1

#: Every kind of run, named after the command that makes it; each with the key that describes its data.
KIND_KEYS = {
    "fit-image": "image", "fit-images": "image", "fit-audio": "audio", "fit-video": "video",
    "fit-shape": "shape", "fit-scene": "scene", "train-ginr": "ginr", "train-mnif": "ginr",
    "train-diffusion": "diffusion", "train-inr-gan": "inr_gan",
}
KINDS = tuple(KIND_KEYS)

#: Keys a manifest holds beside the settings, each with the type it must have.
EXTRA_KEYS: dict[str, type] = {"kind": str, "format": int, "resolved_device": str, "field_spec": dict,
                               **{key: dict for key in set(KIND_KEYS.values())}}

NAME = "config.json"


def command_of(kind: str) -> str:
    """The command that makes runs of `kind`: 'fit-image' -> 'nfields fit image'."""
    verb, _, what = kind.partition("-")
    return f"nfields {verb} {what}"


def legacy_kind(data: dict[str, Any]) -> str | None:
    """The kind of a manifest written before manifests named it, from the keys it holds (None: not a run)."""
    if isinstance(data.get("ginr"), dict):
        return "train-mnif" if data.get("field") == "mnif" else "train-ginr"
    for key, kind in (("scene", "fit-scene"), ("diffusion", "train-diffusion"), ("inr_gan", "train-inr-gan"),
                      ("audio", "fit-audio"), ("video", "fit-video"), ("shape", "fit-shape")):
        if isinstance(data.get(key), dict):
            return kind
    if isinstance(data.get("image"), dict):
        return "fit-images" if "count" in data["image"] else "fit-image"
    return None


def is_manifest(data: Any) -> bool:
    """True for what a run folder's config.json holds (current or earlier format), however damaged its settings."""
    return isinstance(data, dict) and (data.get("kind") in KINDS or legacy_kind(data) is not None)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's config.json, checked to be a run manifest; `kind` filled in for runs of earlier formats."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NfieldsError(f"run folder '{run_dir}' does not exist; give the --out folder of a run.")
    path = run_dir / NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError):
        raise NfieldsError(f"'{run_dir}' is not a run folder (no readable config.json).") from None
    except ValueError as error:
        raise NfieldsError(f"'{path}' is not valid JSON ({error}); restore the file or start the run again.") from None
    return check_manifest(data, path)


def check_manifest(data: Any, path: str | Path) -> dict[str, Any]:
    """`data` (a manifest read from `path`) checked: a JSON object of a known kind and format."""
    if not isinstance(data, dict):
        raise NfieldsError(f"'{path}' must hold a JSON object of settings, not {_json_type(data)}.")
    if "kind" not in data and "format" not in data:
        kind = legacy_kind(data)
        if kind is None:
            raise NfieldsError(f"'{path}' is not an nfields run manifest (it names no kind); give the --out "
                               f"folder of a run.")
        return {**data, "kind": kind}
    kind, version = data.get("kind"), data.get("format")
    if kind not in KINDS:
        raise NfieldsError(f"'{path}' has kind={_short(kind)}, which is not a kind of run; use one of "
                           f"{', '.join(KINDS)}.")
    if type(version) is not int or version < 1:
        raise NfieldsError(f"'{path}' has format={_short(version)}, which must be a positive integer (this "
                           f"nfields writes {FORMAT}).")
    if version > FORMAT:
        raise NfieldsError(f"'{path}' has format {version}, newer than this nfields reads ({FORMAT}); upgrade "
                           f"nfields to use the run.")
    return data


def is_run_of(run_dir: str | Path, *kinds: str) -> bool:
    """True when `run_dir` holds a readable run manifest of one of `kinds`; False for anything else."""
    try:
        return read_manifest(run_dir)["kind"] in kinds
    except NfieldsError:
        return False


def run_kind(run_dir: str | Path) -> str:
    """The kind of the run in `run_dir` ('fit-image', 'train-ginr', ...; see KINDS), from its manifest.

    >>> run_kind("runs/camera-siren")
    'fit-image'
    """
    return read_manifest(run_dir)["kind"]


def manifest(kind: str, settings: Any, **extra: Any) -> dict[str, Any]:
    """What config.json holds: the kind, the format, the resolved settings (a dataclass) and `extra` keys."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    return {"kind": kind, "format": FORMAT, **dataclasses.asdict(settings), **extra}


def settings_from_manifest(data: dict[str, Any], cls: type, path: str | Path) -> Any:
    """The settings dataclass `cls` of a checked manifest (see read_manifest): every key known, every setting
    of the right type (all present, unless the manifest predates format 1) and in range (`cls.validate()`)."""
    known = {f.name for f in dataclasses.fields(cls)} | set(EXTRA_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise NfieldsError(f"'{path}' has an unknown key '{unknown[0]}'; remove it (was the file edited by hand?).")
    for key, expected in EXTRA_KEYS.items():
        if key in data and not (isinstance(data[key], expected) and not isinstance(data[key], bool)):
            raise NfieldsError(f"'{path}' has {key}={_short(data[key])}, which must be {_describe(expected)}.")
    kind_key = KIND_KEYS[data["kind"]]
    for key in ("field_spec", kind_key):
        if key not in data:
            raise NfieldsError(f"'{path}' is missing the key '{key}' that a {data['kind']} run has; restore the "
                               f"file or start the run again.")
    settings = check_settings(data, cls, f"'{path}'", require_all="format" in data)
    return validated(cls(**settings), path)


def check_settings(data: dict[str, Any], cls: type, where: str, require_all: bool = False) -> dict[str, Any]:
    """The entries of `data` that are settings of dataclass `cls`, each checked against its annotation
    (int, float, str, bool, list[...], dict[...], unions with None). With `require_all`, every setting of
    `cls` must be there. A wrong one is an NfieldsError naming the key and `where` ("'runs/x/config.json'")."""
    hints = _hints(cls)
    settings = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            if require_all:
                raise NfieldsError(f"{where} is missing the setting '{field.name}'; restore the file or start "
                                   f"the run again.")
            continue
        value = data[field.name]
        if not _matches(value, hints[field.name]):
            raise NfieldsError(f"{where} has {field.name}={_short(value)}, which must be "
                               f"{_describe(hints[field.name])}.")
        settings[field.name] = value
    return settings


def validated(config: Any, path: str | Path) -> Any:
    """`config` after its own range checks (`validate()`), their message prefixed with the file's name."""
    check = getattr(config, "validate", None)
    if check is not None:
        try:
            check()
        except NfieldsError as error:
            raise NfieldsError(f"'{path}' has a setting out of range: {error}") from None
    return config


# -- type checks ------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    if hint is Any:
        return "any value"
    if hint is None or hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    simple = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
              dict: "a JSON object", list: "a list"}
    if hint in simple:
        return simple[hint]
    if origin in (list, tuple):
        inner = _describe(args[0]) if args else "values"
        for article in ("an ", "a "):
            if inner.startswith(article):
                inner = inner[len(article):] + "s"
                break
        return f"a list of {inner}"
    if origin is dict:
        return "a JSON object"
    return getattr(hint, "__name__", str(hint))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "true or false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
