"""Conversion targets: one registry (``base.TARGETS``), one module per backend (export + run)."""

from edgeeff.targets.base import TARGETS, TargetSpec, get_target, list_targets

__all__ = ["TARGETS", "TargetSpec", "get_target", "list_targets"]
