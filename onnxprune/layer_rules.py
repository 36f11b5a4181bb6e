"""Per-layer rules from a config file (NNI's ``config_list`` style): which layers get which
sparsity, or are left alone."""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .option_checks import check_fraction, check_regex, patterns

__all__ = ["LayerRule", "config_file_options", "load_config_file", "load_layer_rules"]


@dataclass(frozen=True)
class LayerRule:
    """One entry of a config file, in the spirit of NNI's ``config_list``: layers matching
    ``op_types`` and ``op_names`` (regular expressions, searched in node names) get
    ``sparsity``, or are left alone with ``exclude``. Entries apply in order; later ones win."""

    op_types: tuple[str, ...] = ()
    op_names: tuple[str, ...] = ()
    sparsity: float | None = None
    exclude: bool = False
    # Where the entry came from, for messages: "prune.yaml: entry 2", "layer_rules entry 0".
    origin: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        # One op type or pattern given as a string is that one, not its characters: op_types
        # "Conv" matched no op, op_names "head" excluded every layer with an 'h', 'e', 'a' or 'd'.
        object.__setattr__(self, "op_types", patterns(self.op_types, "config entry op_types", "an op type"))
        object.__setattr__(self, "op_names", patterns(self.op_names, "config entry op_names"))
        if self.sparsity is not None and (
            isinstance(self.sparsity, bool) or not isinstance(self.sparsity, numbers.Real)
        ):
            raise UsageError(
                f"config entry sparsity must be a number, got {type(self.sparsity).__name__} {self.sparsity!r}"
            )
        if not isinstance(self.exclude, bool):  # "false" is a non-empty string: it excluded the layers
            raise UsageError(
                f"config entry exclude must be true or false, got {type(self.exclude).__name__} {self.exclude!r}"
            )
        check_fraction(
            self.sparsity,
            "config entry sparsity",
            "the share of the layer's output channels removed",
            closed=(True, False),
        )
        if self.sparsity is None and not self.exclude:
            raise UsageError("config entry needs 'sparsity' or 'exclude: true'")
        for pattern in self.op_names:
            check_regex(pattern, "config entry op_names")

    def named(self, index: int) -> str:
        """The entry as messages name it: its file and place, else ``layer_rules entry N``."""
        return self.origin or f"layer_rules entry {index}"

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], where: str = "config entry") -> LayerRule:
        """One entry of a config file (``sparsity_per_layer`` is NNI's name for ``sparsity``);
        errors are prefixed with ``where``."""
        if not isinstance(entry, Mapping):
            raise UsageError(f"{where} is not a mapping")
        unknown = set(entry) - {"op_types", "op_names", "sparsity", "sparsity_per_layer", "exclude"}
        if unknown:
            raise UsageError(f"{where} has unknown keys {sorted(unknown)}")
        sparsity = entry.get("sparsity", entry.get("sparsity_per_layer"))
        if isinstance(sparsity, str):  # "0.3" from a form or a quoted YAML value
            try:
                sparsity = float(sparsity)
            except ValueError:
                raise UsageError(f"{where}: config entry sparsity must be a number, got {sparsity!r}") from None
        try:
            return cls(
                op_types=entry.get("op_types", ()),
                op_names=entry.get("op_names", ()),
                sparsity=sparsity,
                exclude=entry.get("exclude", False),
                origin=where,
            )
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.cli_text}") from None


def load_layer_rules(path: str | os.PathLike[str]) -> tuple[LayerRule, ...]:
    """Read a JSON or YAML config file: a list of entries (or {"config_list": [...]}). A file
    that also names ``rules`` (for custom ops) is refused rather than read without them: read
    it with ``PruneConfig.from_file``, which takes both, as ``--config`` does."""
    layer_rules, rules = load_config_file(path)
    if rules is not None:
        raise UsageError(
            f"{os.fspath(path)}: its rules {rules} are not layer rules and load_layer_rules would drop them: "
            "read the file with PruneConfig.from_file(path)"
        )
    return layer_rules


def config_file_options(path: str | os.PathLike[str], rules: object = None, option: str = "rules") -> dict[str, Any]:
    """The options a config file gives (``--config``, ``PruneConfig.from_file``):
    ``layer_rules``, and ``rules`` (the file's, else ``rules``, the ones given beside it; both
    given: refused, naming ``option``, the file and both)."""
    layer_rules, found = load_config_file(path)
    if found is not None and rules is not None:
        shown = rules if isinstance(rules, str) else f"{rules!r:.60}"
        raise UsageError(f"{option} {shown} and {os.fspath(path)}'s rules {found}: give one")
    return {"layer_rules": layer_rules, "rules": rules if found is None else found}


_CONFIG_KEYS = frozenset({"config_list", "layers", "rules"})


def load_config_file(path: str | os.PathLike[str]) -> tuple[tuple[LayerRule, ...], str | None]:
    """A config file's layer rules, and its ``rules`` (the spec of your rules for custom ops,
    as ``--rules`` takes it: a relative FILE.py is relative to the config file's folder; None
    when not given). The file is a list of entries, or a mapping with ``config_list`` (or
    ``layers``) and ``rules``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:  # a binary file given by mistake
        raise UsageError(f"{path}: cannot read config (not UTF-8 text)") from None
    data: Any
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml  # PyYAML: the YAML parser everyone has; only needed for YAML configs

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json and yaml raise their own types
        raise UsageError(
            f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} ({str(exc).splitlines()[0]})"
        ) from None
    rules = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - _CONFIG_KEYS, key=str)
        if unknown:  # a misspelt key would otherwise be dropped without a word
            raise UsageError(
                f"{path}: unknown key {unknown[0]!r} in the config mapping; it takes {', '.join(sorted(_CONFIG_KEYS))}"
            )
        rules = data.get("rules")
        if rules is not None and not isinstance(rules, str):
            raise UsageError(f"{path}: rules must be a string FILE.py:NAME or module:NAME, got {type(rules).__name__}")
        entries = data.get("config_list", data.get("layers"))
        data = [] if entries is None and rules is not None else entries
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a list of entries (or {{'config_list': [...]}})")
    if rules is not None:
        where, sep, name = rules.rpartition(":")
        from .user_validation import _is_file

        if sep and where and _is_file(where) and not os.path.isabs(where):
            rules = f"{os.path.join(os.path.dirname(path), where)}:{name}"
    return tuple(LayerRule.from_dict(entry, f"{path}: entry {i}") for i, entry in enumerate(data)), rules
