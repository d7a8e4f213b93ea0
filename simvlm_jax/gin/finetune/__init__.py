"""Gin files; a package only so that gin can include them as `simvlm_jax.gin.<folder>/<file>.gin`
from any directory."""
