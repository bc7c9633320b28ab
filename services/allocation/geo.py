"""Moved to ``invsaga.domain.geo``. This re-export lasts only until ``coordinator/server.py``
imports from there; then this module goes."""

from invsaga.domain.geo import UnknownAddress, resolve

__all__ = ["UnknownAddress", "resolve"]
