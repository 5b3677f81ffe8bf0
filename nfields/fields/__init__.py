"""Fields: `field(coords, condition=None) -> values`. Importing this registers every field."""

from . import hashgrid, mlp, siren  # noqa: F401  (registration)
from .base import FIELDS, Field, field_from_spec, make_field, parameter_count
from .hashgrid import HashGridField
from .mlp import FourierField, GaussField, ReluField, ReluPEField
from .siren import Siren

__all__ = ["FIELDS", "Field", "field_from_spec", "make_field", "parameter_count", "HashGridField",
           "FourierField", "GaussField", "ReluField", "ReluPEField", "Siren"]
