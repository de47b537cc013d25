"""The weights API under its earlier name: everything here lives in `dyhead.weights` (one module per
file format); this module re-exports it so that ``from dyhead.checkpoint import load_detector`` keeps
working."""

from .weights import *  # noqa: F401,F403
from .weights import __all__  # noqa: F401
