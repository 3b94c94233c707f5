"""Resource limits shared by the API and the CLI (a module without heavy imports)."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_PIXELS"]

#: Default bound on width x height of a decoded image (`--max-pixels`): 40 MP, about 120 MB
#: of RGB per decoding thread. Larger images are refused from their header, before decoding.
DEFAULT_MAX_PIXELS = 40_000_000
