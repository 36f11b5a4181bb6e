"""Criteria decide which channel groups to remove."""

from .zero import zero_plan

__all__ = ["zero_plan"]
