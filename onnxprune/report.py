"""The report of a pruning run, as data (``to_dict`` is the JSON the CLI writes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .verify import OutputFidelity, VerificationResult

__all__ = ["LayerChange", "KeptGroup", "PruneReport"]


@dataclass(frozen=True)
class LayerChange:
    node: str
    op: str
    channels_before: int
    channels_after: int


@dataclass(frozen=True)
class KeptGroup:
    id: int
    channels: int
    members: tuple[tuple[str, int], ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "channels": self.channels,
            "members": [{"node": n, "channel": c} for n, c in self.members[:8]],
            "more_members": max(0, len(self.members) - 8),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PruneReport:
    model: str
    criterion: str
    channels_total: int
    channels_removed: int
    groups_total: int
    groups_removed: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    macs_complete: bool
    size_before: int
    size_after: int
    layers: tuple[LayerChange, ...]
    kept_groups: tuple[KeptGroup, ...]
    verification: VerificationResult | None
    notes: tuple[str, ...] = field(default=())
    fidelity: tuple[OutputFidelity, ...] | None = None
    compensation: str = "exact constants"
    reference: str = "original"
    budget: dict | None = None
    extra: dict | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "criterion": self.criterion,
            "channels_total": self.channels_total,
            "channels_removed": self.channels_removed,
            "groups_total": self.groups_total,
            "groups_removed": self.groups_removed,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_complete": self.macs_complete,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "layers": [
                {"node": l.node, "op": l.op, "channels_before": l.channels_before, "channels_after": l.channels_after}
                for l in self.layers
            ],
            "kept_groups": [g.to_dict() for g in self.kept_groups],
            "verification": None if self.verification is None else self.verification.to_dict(),
            "notes": list(self.notes),
            "fidelity": None if self.fidelity is None else [f.to_dict() for f in self.fidelity],
            "compensation": self.compensation,
            "verified_against": self.reference,
            "budget": self.budget,
            **(self.extra or {}),
        }
