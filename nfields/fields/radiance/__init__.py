"""Scene fields: rays in, colours out. Importing this registers every scene field."""

from . import lightfield, nerf, ngp  # noqa: F401  (registration)
from .base import SCENE_FIELDS, SceneBounds, SceneField, make_scene_field, scene_field_from_spec

__all__ = ["SCENE_FIELDS", "SceneBounds", "SceneField", "make_scene_field", "scene_field_from_spec"]
