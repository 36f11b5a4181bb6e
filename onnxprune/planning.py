"""PruningPlan: which channel groups go, as data (JSON round trip), and the constraints every
plan must satisfy (grouped Conv balance, at least one channel per tensor)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from .analysis import Balance, ChannelAnalysis
from .errors import UsageError, cli_text
from .render import json_text

__all__ = ["PruningPlan", "blocked_balances", "enforce_constraints", "whole_group_units"]

PLAN_FORMAT = "onnxprune-plan/1"


def _whole(value: object, what: str) -> int:
    """An integer field of a plan file: int() would read 2.9 as channel 2 (another channel than
    written) and true as 1."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{what} {value!r} is not a whole number")
    return int(value)


@dataclass(frozen=True)
class PruningPlan:
    """The groups to remove (with their members and scores) and, for every group that stays, why.

    Group ids are those of the ChannelAnalysis the plan was made from; a plan read back from
    JSON is matched to a new analysis by its members (``resolve``), so it can be edited by hand.
    """

    criterion: str
    removed_groups: tuple[int, ...]
    kept_reasons: Mapping[int, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    scores: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))
    members: Mapping[int, tuple[tuple[str, int], ...]] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()  # what the planner could not do as asked (e.g. a MACs target missed), and why
    source: str | None = field(default=None, compare=False)  # the file it was read from (PruningPlan.load)

    def __post_init__(self) -> None:
        object.__setattr__(self, "removed_groups", tuple(sorted(int(g) for g in self.removed_groups)))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        object.__setattr__(
            self, "kept_reasons", MappingProxyType({int(k): tuple(v) for k, v in self.kept_reasons.items()})
        )
        object.__setattr__(self, "scores", MappingProxyType({int(k): float(v) for k, v in self.scores.items()}))
        object.__setattr__(
            self,
            "members",
            MappingProxyType({int(k): tuple((str(n), int(c)) for n, c in v) for k, v in self.members.items()}),
        )

    @property
    def exact(self) -> bool:
        """True when removal is meant to leave the outputs unchanged (the zero criterion)."""
        return self.criterion == "zero"

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "criterion": self.criterion,
            "removed": [
                {
                    "group": g,
                    "score": self.scores.get(g),
                    "members": [[n, c] for n, c in self.members.get(g, ())],
                }
                for g in self.removed_groups
            ],
            "kept_reasons": {str(k): list(v) for k, v in sorted(self.kept_reasons.items())},
        }

    def to_json(self) -> str:
        """``to_dict()`` as strict JSON (``--save-plan``): a NaN or infinite score is null, which
        ``from_dict`` reads back as no score (``json.dumps`` would write a bare NaN: not JSON)."""
        return json_text(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PruningPlan:
        """The plan in JSON file ``path`` (as ``to_json`` / ``--save-plan`` write it); every
        problem, and a plan that does not fit the model it is applied to, is a UsageError naming
        the file."""
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise UsageError(f"{name}: plan file not found")
        try:
            with open(name, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{name}: not JSON ({exc})") from None
        except UnicodeDecodeError:  # a binary file: before json sees a character
            raise UsageError(f"{name}: not JSON (not UTF-8 text)") from None
        except OSError as exc:
            raise UsageError(f"{name}: cannot read the plan ({exc.strerror or exc})") from None
        try:
            return replace(cls.from_dict(data), source=name)
        except UsageError as exc:  # not a plan, or a malformed one
            raise UsageError(f"{name}: {exc.cli_text}") from None

    def mismatch(self, reason: object, model: str) -> UsageError:
        """The error for a plan that does not fit ``model`` (``reason``: resolve's UsageError),
        naming the plan's file (when read from one), the model and the reason."""
        where = f"{self.source}: the plan" if self.source else "the plan"
        # A custom op without its rule pins its channels: the plan was made with rules given now without.
        why = "made with rules for custom ops (--rules)? give the same" if "has no rule" in str(reason) else ""
        return UsageError(
            f"{where} does not fit {model}: {cli_text(reason) if isinstance(reason, BaseException) else reason} (was it {why or 'made for another model?'})"
        )

    @classmethod
    def from_dict(cls, data: Mapping) -> PruningPlan:
        if not isinstance(data, Mapping) or data.get("format") != PLAN_FORMAT:
            raise UsageError(f"not an onnxprune plan (expected format {PLAN_FORMAT!r})")
        try:
            removed = [
                (
                    _whole(e["group"], "group"),
                    e.get("score"),
                    [(str(n), _whole(c, f"{n}'s channel")) for n, c in e.get("members", [])],
                )
                for e in data["removed"]
            ]
            kept = data.get("kept_reasons", {})  # group id -> its reasons, as to_dict writes them
            if not isinstance(kept, Mapping):
                raise TypeError(f"kept_reasons is {type(kept).__name__}, not an object of group -> reasons")
            kept_reasons: dict[int, tuple[str, ...]] = {}
            for k, v in kept.items():
                if not str(k).strip().lstrip("-").isdigit():
                    raise ValueError(f"kept_reasons names group {k!r}, not a group number")
                if not isinstance(v, list) or not all(isinstance(r, str) for r in v):
                    raise TypeError(f"group {k}'s kept reasons {v!r} are not a list of strings")
                kept_reasons[int(k)] = tuple(v)
        except KeyError as exc:  # str(KeyError) is only the key's repr: say what it is
            raise UsageError(f"malformed plan: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"malformed plan: {exc}") from None
        for g, s, _ in removed:  # null (a non-finite score as written) is no score
            if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))):
                raise UsageError(f"malformed plan: group {g}'s score {s!r} is not a number")
        return cls(
            criterion=str(data.get("criterion", "plan")),
            removed_groups=tuple(g for g, _, _ in removed),
            kept_reasons=kept_reasons,
            scores={g: s for g, s, _ in removed if s is not None},
            members={g: tuple(m) for g, _, m in removed if m},
        )

    def resolve(self, analysis: ChannelAnalysis) -> PruningPlan:
        """Match the plan's groups to ``analysis`` by members; refuse what cannot be removed."""
        where: dict[tuple[str, int], int] = {}
        for g in analysis.groups:
            for m in g.members:
                where[m] = g.id
        groups = []
        for gid in self.removed_groups:
            mem = self.members.get(gid)
            if not mem:
                if gid not in {g.id for g in analysis.groups}:
                    raise UsageError(f"its group {gid} does not exist in the model ({len(analysis.groups)} groups)")
                groups.append(gid)
                continue
            found = {where.get(m) for m in mem}
            if None in found:
                node, channel = next(m for m in mem if m not in where)
                channels = [c for n, c in where if n == node]
                if not channels:
                    raise UsageError(f"its layer {node!r} is not in the model")
                raise UsageError(
                    f"its layer {node!r} loses output channel {channel}, but has {max(channels) + 1} in the model"
                )
            if len(found) != 1:
                raise UsageError(
                    f"the layers listed for its group {gid} belong to {len(found)} channel groups in the model"
                )
            groups.append(found.pop())
        for gid in groups:
            if analysis.group(gid).pinned:
                raise UsageError(
                    f"its group {gid} ({analysis.group(gid).members[0][0]!r}) cannot be removed: "
                    f"{analysis.group(gid).pinned_by[0]}"
                )
        return PruningPlan(
            criterion=self.criterion,
            removed_groups=tuple(groups),
            kept_reasons=self.kept_reasons,
            scores={g: self.scores[o] for g, o in zip(groups, self.removed_groups) if o in self.scores},
            members={g: analysis.group(g).members for g in groups},
            source=self.source,
        )


def enforce_constraints(analysis: ChannelAnalysis, removable: Iterable[int], reasons: dict[int, list[str]]) -> set[int]:
    """Shrink a set of removable groups until every structural constraint holds.

    Grouped Convs must lose the same number of channels in every group, and no tensor may lose
    all its channels. Groups put back get a reason in ``reasons``. Iterates to a fixed point:
    putting a group back can unbalance another constraint, never the other way round.
    """
    removed = set(int(g) for g in removable)
    root_of = analysis.root_of
    changed = True
    while changed:
        changed = False
        for bal in analysis.balances:
            roots = [root_of[row] for row in bal.rows]
            counts = [sum(1 for r in row if int(r) in removed) for row in roots]
            # Rows whose whole group goes (inputs and outputs of a grouped Conv's group) are
            # dropped by the surgery; the rest must balance among themselves.
            dead = (
                [all(int(r) in removed for r in root_of[w]) for w in bal.whole] if bal.whole else [False] * len(roots)
            )
            live = [(row, count) for row, count, d in zip(roots, counts, dead) if not d]
            if not live:
                continue
            target = min(count for _, count in live)
            for row, count in live:
                extra = count - target
                for r in row[::-1]:
                    if extra <= 0:
                        break
                    r = int(r)
                    if r in removed:
                        # Putting a group back frees every position it holds in this row.
                        removed.discard(r)
                        reasons.setdefault(r, []).append(f"{bal.node}: {bal.reason}")
                        extra -= int(np.count_nonzero(row == r))
                        changed = True
        if not removed:
            break
        is_removed = np.zeros(len(root_of), dtype=bool)  # by root id (a channel id)
        is_removed[np.fromiter(removed, dtype=np.int64)] = True
        for name, lay in analysis.layouts.items():
            for ids in lay.axes.values():
                roots = root_of[ids]
                if is_removed[roots].all():
                    r = int(roots[0])
                    removed.discard(r)
                    is_removed[r] = False
                    reasons.setdefault(r, []).append(f"last channel of tensor {name!r}: at least one must stay")
                    changed = True
    return removed


def blocked_balances(analysis: ChannelAnalysis, removable: Iterable[int]) -> list[Balance]:
    """The grouped Convs from which ``removable`` takes channels that enforce_constraints puts
    all back: equal removal from every group is blocked for them (one output per group, a
    group that got none, pinned channels in one group...)."""
    chosen = {int(g) for g in removable}
    final = enforce_constraints(analysis, chosen, {})
    out, seen = [], set()
    for bal in analysis.balances:
        if not bal.whole or bal.node in seen:
            continue
        ids = {int(r) for row in bal.rows for r in analysis.roots(row)}
        if ids & chosen and not ids & final:
            seen.add(bal.node)
            out += [b for b in analysis.balances if b.node == bal.node]
    return out


def whole_group_units(
    analysis: ChannelAnalysis, balances: Iterable[Balance], allowed: set[int]
) -> list[tuple[int, ...]]:
    """Each group of these grouped Convs as the channel groups that hold its input and output
    channels (sorted), where all of them are ``allowed`` to go: removed together, the surgery
    drops the group and lowers ``group``."""
    units: list[tuple[int, ...]] = []
    for bal in balances:
        for ids in bal.whole:
            unit = tuple(sorted({int(r) for r in analysis.roots(ids)}))
            if unit and set(unit) <= allowed and unit not in units:
                units.append(unit)
    return units
