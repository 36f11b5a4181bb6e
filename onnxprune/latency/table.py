"""The latency table: how a deployment runs (``LatencySettings``), each prunable unit's measured
latency at a few kept channel counts with its fitted curve (``UnitLatency``), and the whole
model's (``LatencyTable``). Frozen data with a JSON round trip; measuring is elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import UsageError
from .fit import monotone_curve, predict_from_curve

__all__ = ["BACKENDS", "HINTS", "PRECISIONS", "TABLE_FORMAT", "LatencySettings", "LatencyTable", "UnitLatency"]

TABLE_FORMAT = "onnxprune-latency-table/1"
BACKENDS = ("openvino", "onnxruntime")
HINTS = ("latency", "throughput")
PRECISIONS = ("f32", "bf16", "f16")


@dataclass(frozen=True)
class LatencySettings:
    """How the user deploys: the runtime and device, batch, threads (None: the runtime's
    choice), OpenVINO's performance hint and inference precision. f32 by default: the CPU
    plugin would pick bf16 on CPUs that have it, which changes what is fast."""

    backend: str = "openvino"
    device: str = "CPU"
    batch: int = 1
    threads: int | None = None
    hint: str = "latency"
    precision: str = "f32"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if self.device != "CPU":
            raise UsageError(f"device {self.device!r}: only CPU latency is measured")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise UsageError(f"--batch must be a positive integer, got {self.batch!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UsageError(f"--threads must be a positive integer, got {self.threads!r}")
        if self.hint not in HINTS:
            raise UsageError(f"unknown hint {self.hint!r}; choose from {', '.join(HINTS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.backend == "onnxruntime" and self.precision != "f32":
            raise UsageError(
                f"precision {self.precision}: onnxruntime's CPU provider computes in the model's types (f32)"
            )

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "device": self.device,
            "batch": self.batch,
            "threads": self.threads,
            "hint": self.hint,
            "precision": self.precision,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LatencySettings:
        return cls(**{k: data[k] for k in ("backend", "device", "batch", "threads", "hint", "precision") if k in data})


@dataclass(frozen=True)
class UnitLatency:
    """One prunable unit (``sensitivity_analysis.Unit``: tied layers): its width, the measured
    latency at some kept channel counts and the channel step found in them.

    ``predict`` is the fitted curve: counts mapped to their step's block end, the medians made
    non-decreasing, linear between measured counts, flat outside them. ``macs_saved``: for the
    same counts, the fraction of the model's MACs removing down to it saves (for comparison)."""

    unit: str
    layers: tuple[str, ...]
    channels: int
    points: tuple[tuple[int, float], ...]
    step: int | None
    macs_saved: tuple[tuple[int, float], ...] = ()
    spread: float = 0.0  # typical p10-p90 width of one point's rounds (s): the noise it was measured in
    # (other unit, weight): the share of this unit's saving made in layers whose other side
    # (inputs of a layer this unit feeds, outputs of one it is fed by) are that unit's channels
    partners: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(str(x) for x in self.layers))
        object.__setattr__(self, "points", tuple(sorted((int(k), float(t)) for k, t in self.points)))
        object.__setattr__(self, "macs_saved", tuple(sorted((int(k), float(m)) for k, m in self.macs_saved)))
        object.__setattr__(self, "partners", tuple((str(u), float(w)) for u, w in self.partners))
        if not self.points:
            raise ValueError(f"unit {self.unit}: no measured points")
        if any(not 0 <= k <= self.channels for k, _ in self.points):
            raise ValueError(f"unit {self.unit}: measured counts outside 0..{self.channels}")
        xs, ts = monotone_curve(self.points, self.step, self.channels)
        object.__setattr__(self, "_curve", (xs, ts))

    def predict(self, kept: int) -> float:
        """Predicted latency (s) of the unit with ``kept`` channels."""
        xs, ts = self._curve  # type: ignore[attr-defined]
        return predict_from_curve(xs, ts, self.step, self.channels, kept)

    def saving(self, kept: int) -> float:
        """Predicted seconds saved by keeping ``kept`` of the unit's channels (>= 0)."""
        return max(self.predict(self.channels) - self.predict(kept), 0.0)

    def to_dict(self) -> dict:
        return {
            "unit": self.unit,
            "layers": list(self.layers),
            "channels": self.channels,
            "step": self.step,
            "spread": self.spread,
            "points": [[k, t] for k, t in self.points],
            "macs_saved": [[k, m] for k, m in self.macs_saved],
            "partners": [[u, w] for u, w in self.partners],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> UnitLatency:
        return cls(
            unit=str(data["unit"]),
            layers=tuple(data["layers"]),
            channels=int(data["channels"]),
            points=tuple((int(k), float(t)) for k, t in data["points"]),
            step=None if data.get("step") is None else int(data["step"]),
            macs_saved=tuple((int(k), float(m)) for k, m in data.get("macs_saved", ())),
            spread=float(data.get("spread", 0.0)),
            partners=tuple((str(u), float(w)) for u, w in data.get("partners", ())),
        )


@dataclass(frozen=True)
class LatencyTable:
    """A model's latency table on one machine and deployment: ``key`` (CPU, runtime and its
    version, precision, batch, threads, hint, the model's sha256) says where it is valid;
    ``baseline`` is the whole model's measured latency (s); ``units`` by unit name. Savings
    are the units' subgraph savings times ``scale``, from one whole-model measurement
    (``calibration``: the model with every unit at half width, measured and predicted)."""

    key: Mapping[str, str]
    baseline: float
    units: Mapping[str, UnitLatency]
    settings: LatencySettings = field(default_factory=LatencySettings)
    seconds: float = 0.0  # time it took to build
    notes: tuple[str, ...] = ()
    cached: bool = field(default=False, compare=False)  # read from the cache (not stored)
    # Whole-model calibration (calibrate.py): every saving is the subgraphs' times ``scale``.
    scale: float = 1.0
    calibration: Mapping[str, float | None] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", MappingProxyType({str(k): str(v) for k, v in self.key.items()}))
        object.__setattr__(self, "units", MappingProxyType(dict(self.units)))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", MappingProxyType(dict(self.calibration)))
        # unit -> (a unit that names it among its partners, that weight): whose overlap its count moves
        readers: dict[str, list[tuple[str, float]]] = {}
        for name, u in self.units.items():
            for p, w in u.partners:
                if p != name:
                    readers.setdefault(p, []).append((name, w))
        object.__setattr__(self, "_readers", {p: tuple(vs) for p, vs in readers.items()})
        # (unit, kept) -> the unit's curve's saving: a planner asks for the same ones many times
        object.__setattr__(self, "_savings", {})

    def _unit_saving(self, unit: str, kept: int) -> float:
        """``UnitLatency.saving`` (unscaled), remembered."""
        memo: dict[tuple[str, int], float] = self._savings  # type: ignore[attr-defined]
        key = (unit, int(kept))
        if key not in memo:
            memo[key] = self.unit(unit).saving(kept)
        return memo[key]

    def unit(self, name: str) -> UnitLatency:
        try:
            return self.units[name]
        except KeyError:
            raise UsageError(f"latency table has no unit {name!r}") from None

    def predict(self, unit: str, kept: int) -> float:
        """Predicted latency (s) of ``unit``'s measured part with ``kept`` channels."""
        return self.unit(unit).predict(kept)

    def saving(self, unit: str, kept: int) -> float:
        """Predicted seconds saved by keeping ``kept`` of ``unit``'s channels, vs the full unit."""
        return self.scale * self._unit_saving(unit, kept)

    def predicted_latency(self, kept: Mapping[str, int]) -> float:
        """The model's predicted latency (s) with ``kept`` channels in the named units (others
        full): the baseline minus each unit's saving, corrected where two units share layers.

        A unit's saving was measured with every other unit full. A layer between two units
        (reading one's channels, writing the other's) costs about in x out, so when both
        shrink, summing the two savings counts the corner (removed in) x (removed out) twice;
        the mean of "partner full" and "partner shrunk", i.e. the saving scaled by
        1 - weight x removed fraction / 2, is exact for such a layer. The weight (``partners``)
        is the share of the unit's MACs saving made in layers shared with that partner. The
        total is multiplied by the table's ``scale``."""
        frac = {u: 1.0 - k / self.unit(u).channels for u, k in kept.items()}
        total = 0.0
        for u, k in kept.items():
            unit = self.unit(u)
            overlap = 1.0 - sum(w * frac.get(p, 0.0) for p, w in unit.partners) / 2.0
            total += self._unit_saving(u, k) * max(overlap, 0.0)
        return max(self.baseline - self.scale * total, 0.0)

    def saving_with(self, unit: str, kept: int, others: Mapping[str, int]) -> float:
        """Predicted seconds saved by taking ``unit`` from its count in ``others`` (full if
        absent) to ``kept``, the other units at their counts in ``others``: what the move saves
        once its partners have shrunk (``predicted_latency`` before minus after, computed from
        the terms the move changes: its own, and those of the units that name it a partner)."""
        u = self.unit(unit)

        def frac(name: str) -> float:
            k = others.get(name)
            return 0.0 if k is None else 1.0 - k / self.unit(name).channels

        own = 1.0 - sum(w * frac(p) for p, w in u.partners if p != unit) / 2.0
        k_from = others.get(unit, u.channels)
        delta = (self._unit_saving(unit, kept) - self._unit_saving(unit, k_from)) * max(own, 0.0)
        f_from, f_to = 1.0 - k_from / u.channels, 1.0 - kept / u.channels
        for v, w in self._readers.get(unit, ()):  # type: ignore[attr-defined]
            k_v = others.get(v)
            if k_v is None:
                continue  # a full unit saves nothing, whatever its overlap
            rest = 1.0 - sum(wp * frac(p) for p, wp in self.unit(v).partners if p != unit) / 2.0
            delta += self._unit_saving(v, k_v) * (max(rest - w * f_to / 2.0, 0.0) - max(rest - w * f_from / 2.0, 0.0))
        return self.scale * delta

    def to_dict(self) -> dict:
        return {
            "format": TABLE_FORMAT,
            "key": dict(self.key),
            "settings": self.settings.to_dict(),
            "baseline": self.baseline,
            "scale": self.scale,
            "calibration": None if self.calibration is None else dict(self.calibration),
            "seconds": self.seconds,
            "notes": list(self.notes),
            "units": [u.to_dict() for u in self.units.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LatencyTable:
        """Read a table back; anything malformed is a UsageError."""
        if not isinstance(data, Mapping) or data.get("format") != TABLE_FORMAT:
            raise UsageError(f"not an onnxprune latency table (expected format {TABLE_FORMAT!r})")
        try:
            units = [UnitLatency.from_dict(u) for u in data["units"]]
            return cls(
                key=dict(data["key"]),
                baseline=float(data["baseline"]),
                units={u.unit: u for u in units},
                settings=LatencySettings.from_dict(data.get("settings", {})),
                seconds=float(data.get("seconds", 0.0)),
                notes=tuple(data.get("notes", ())),
                scale=float(data.get("scale", 1.0)),
                calibration=data.get("calibration"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"malformed latency table: {type(exc).__name__}: {exc}") from None
