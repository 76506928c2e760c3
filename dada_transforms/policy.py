"""The policy data model and its versioned JSON format.

A policy is a list of sub-policies; a sub-policy is an ordered list of
operations ``(op, probability, magnitude)`` with probability and magnitude in
[0, 1]. JSON format, version 1::

    {
      "format": "dada-policy",
      "version": 1,
      "name": "cifar10",                       # optional
      "description": "...",                    # optional
      "sub_policies": [
        [{"op": "TranslateX", "probability": 0.518, "magnitude": 0.575},
         {"op": "Rotate", "probability": 0.569, "magnitude": 0.527}],
        ...
      ],
      "metadata": {...}                         # optional, free-form JSON
    }

Per image one sub-policy is chosen uniformly (the paper's). Version 2 adds one optional
field, ``"sampling_weights"``: one positive finite number per sub-policy, in the order of
``sub_policies``; sub-policy i is then chosen with probability ``w_i / sum(w)`` (our
extension beyond the paper). Files are written as version 1 unless they carry weights, so
unweighted policies keep their bytes and older readers refuse weighted files instead of
applying them uniformly. ``metadata`` is never read for sampling (a search's
``metadata["sub_policy_weights"]`` is information only).

Untrusted sizes are bounded: at most ``MAX_SUB_POLICIES`` sub-policies of at most
``MAX_OPERATIONS_PER_SUB_POLICY`` operations, and policy files of at most
``MAX_POLICY_FILE_BYTES``. Files are strict JSON: UTF-8, no duplicate keys, no NaN or
Infinity (non-finite numbers in metadata are written as ``null``).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .files import read_regular_file
from .ops import OPERATION_NAMES, OPERATIONS

FORMAT_NAME = "dada-policy"
FORMAT_VERSION = 2
"""The newest version read and written; version 1 (no ``sampling_weights``) is read and written too."""
WEIGHTED_KEY = "sampling_weights"
MAX_SUB_POLICIES = 1024
MAX_OPERATIONS_PER_SUB_POLICY = 16
MAX_POLICY_FILE_BYTES = 4 * 1024 * 1024
MAX_JSON_INTEGER_DIGITS = 300
"""Longer integers do not fit in a float (about 1.8e308): refused when JSON is parsed."""


def _closest(word: str, choices: Iterable[str]) -> str:
    """A " (did you mean ...?)" hint for ``word``: close matches, case ignored."""
    by_folded = {choice.casefold(): choice for choice in choices}
    folded = difflib.get_close_matches(word.casefold(), list(by_folded), n=3, cutoff=0.5)
    matches = [by_folded[match] for match in folded]
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def _unit_interval(value: Any, what: str) -> float:
    """``value`` as a float in [0, 1]; real numbers of any type (Python, numpy) are accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} {value!r} is outside [0, 1]")
    return float(value)


def _check_count(count: int, limit: int, what: str, container: str) -> None:
    if count > limit:
        raise ValueError(f"{container} has {count} {what}; the limit is {limit}")


@dataclass(frozen=True)
class Operation:
    """One operation of a sub-policy."""

    op: str
    probability: float
    magnitude: float

    def __post_init__(self) -> None:
        if not isinstance(self.op, str):
            raise ValueError(f"'op' must be a string naming an operation, got {self.op!r}")
        if self.op not in OPERATIONS:
            raise ValueError(
                f"unknown operation {self.op!r}{_closest(str(self.op), OPERATION_NAMES)}; "
                f"known operations: {', '.join(OPERATION_NAMES)}"
            )
        object.__setattr__(self, "probability", _unit_interval(self.probability, f"{self.op} probability"))
        object.__setattr__(self, "magnitude", _unit_interval(self.magnitude, f"{self.op} magnitude"))

    def describe(self) -> str:
        """A readable form, e.g. ``Rotate +/-13.5 deg (p=0.57)``."""
        return f"{OPERATIONS[self.op].describe(self.magnitude)} (p={self.probability:.2f})"


@dataclass(frozen=True)
class SubPolicy:
    """An ordered list of operations, applied in turn, each with its probability."""

    operations: tuple[Operation, ...]

    def __post_init__(self) -> None:
        if not self.operations:
            raise ValueError("a sub-policy needs at least one operation, got an empty one")
        _check_count(len(self.operations), MAX_OPERATIONS_PER_SUB_POLICY, "operations", "a sub-policy")

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    def __getitem__(self, index: int) -> Operation:
        return self.operations[index]


@dataclass(frozen=True)
class Policy:
    """A DADA policy: sub-policies, one of which is chosen per image: uniformly, or with probabilities
    proportional to ``sampling_weights`` (one positive finite number per sub-policy) when given."""

    sub_policies: tuple[SubPolicy, ...]
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    sampling_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.sub_policies:
            raise ValueError("a policy needs at least one sub-policy, got an empty policy")
        _check_count(len(self.sub_policies), MAX_SUB_POLICIES, "sub-policies", "a policy")
        if self.sampling_weights is not None:
            object.__setattr__(self, "sampling_weights", _sampling_weights(self.sampling_weights, len(self.sub_policies)))

    def __iter__(self) -> Iterator[SubPolicy]:
        return iter(self.sub_policies)

    def __len__(self) -> int:
        return len(self.sub_policies)

    def __getitem__(self, index: int) -> SubPolicy:
        return self.sub_policies[index]

    @property
    def operation_names(self) -> set[str]:
        return {operation.op for sub_policy in self for operation in sub_policy}

    @property
    def sampling_probabilities(self) -> tuple[float, ...] | None:
        """Each sub-policy's probability of being chosen, ``w_i / sum(w)``; None when chosen uniformly."""
        if self.sampling_weights is None:
            return None
        total = sum(self.sampling_weights)
        return tuple(weight / total for weight in self.sampling_weights)

    @functools.cached_property
    def sampling_cdf(self) -> tuple[float, ...] | None:
        """The cumulative sampling probabilities (a sub-policy is the first whose value exceeds a
        uniform draw in [0, 1)); None when chosen uniformly. Computed once per policy."""
        probabilities = self.sampling_probabilities
        return None if probabilities is None else tuple(itertools.accumulate(probabilities))

    # -- construction ------------------------------------------------------

    @classmethod
    def from_list(
        cls,
        sub_policies: Sequence[Sequence[Any]],
        name: str | None = None,
        sampling_weights: Sequence[float] | None = None,
    ) -> Policy:
        """A policy from literal sub-policies of ``(op, probability, magnitude)`` triples or dicts,
        with optional sampling weights (one positive number per sub-policy)."""
        if isinstance(sub_policies, (str, bytes)) or not isinstance(sub_policies, Sequence):
            raise ValueError(f"a policy must be a list of sub-policies, got {type(sub_policies).__name__}")
        if not sub_policies:
            raise ValueError("a policy needs at least one sub-policy, got an empty list")
        _check_count(len(sub_policies), MAX_SUB_POLICIES, "sub-policies", "a policy")
        built = []
        for index, sub_policy in enumerate(sub_policies):
            if isinstance(sub_policy, (str, bytes)) or not isinstance(sub_policy, Sequence):
                raise ValueError(f"sub-policy {index} must be a list of operations, got {sub_policy!r}")
            try:
                _check_count(len(sub_policy), MAX_OPERATIONS_PER_SUB_POLICY, "operations", "a sub-policy")
                built.append(SubPolicy(tuple(_operation(item) for item in sub_policy)))
            except ValueError as error:
                raise ValueError(f"sub-policy {index}: {error}") from None
        return cls(tuple(built), name=name, sampling_weights=sampling_weights)

    @classmethod
    def from_dict(cls, data: Any) -> Policy:
        """A policy from the parsed JSON format (validated)."""
        if not isinstance(data, dict):
            raise ValueError(f"a policy file must hold a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT_NAME:
            raise ValueError(f"'format' must be {FORMAT_NAME!r}, got {data.get('format')!r}")
        version = data.get("version")
        if type(version) is not int:  # true and 1.0 compare equal to 1, but are not versions
            raise ValueError(f"'version' must be an integer, got {version!r}")
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"unsupported policy format version {version!r}; this library reads 1 and {FORMAT_VERSION}")
        known = {"format", "version", "name", "description", "sub_policies", "metadata"}
        unknown = set(data) - known - ({WEIGHTED_KEY} if version == FORMAT_VERSION else set())
        if unknown:
            raise ValueError(f"unknown keys in policy: {', '.join(sorted(unknown))}")
        for key in ("name", "description"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"'{key}' must be a string, got {data[key]!r}")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ValueError(f"'metadata' must be an object, got {metadata!r}")
        sub_policies = data.get("sub_policies", [])
        if not isinstance(sub_policies, list):
            raise ValueError(f"'sub_policies' must be a list of sub-policies, got {sub_policies!r}")
        policy = cls.from_list(sub_policies, name=data.get("name"), sampling_weights=data.get(WEIGHTED_KEY))
        return cls(
            policy.sub_policies, name=policy.name, description=data.get("description"), metadata=metadata,
            sampling_weights=policy.sampling_weights,
        )

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> Policy:
        """A policy from the text of a policy file (strict JSON, at most ``MAX_POLICY_FILE_BYTES``)."""
        return cls.from_dict(parse_json(data))

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> Policy:
        """A policy from JSON text or from a JSON file's path; errors name the file."""
        text, origin = str(source), None
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            origin = Path(source)
        data = read_policy_bytes(origin) if origin is not None else text
        try:
            return cls.from_json_bytes(data)
        except ValueError as error:
            where = f"policy file {str(origin)!r}" if origin else "policy JSON"
            raise ValueError(f"invalid {where}: {error}") from None

    # -- serialisation -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT_NAME, "version": 1 if self.sampling_weights is None else FORMAT_VERSION}
        if self.name is not None:
            data["name"] = self.name
        if self.description is not None:
            data["description"] = self.description
        data["sub_policies"] = [
            [{"op": o.op, "probability": o.probability, "magnitude": o.magnitude} for o in sub_policy]
            for sub_policy in self
        ]
        if self.sampling_weights is not None:
            data[WEIGHTED_KEY] = list(self.sampling_weights)
        if self.metadata:
            data["metadata"] = _json_value(self.metadata, "metadata")
        return data

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int = 1) -> str:
        """The policy as JSON text; with ``path``, also written there atomically."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        if path is not None:
            write_text_atomic(Path(path), text)
        return text

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        weighted = ", weighted" if self.sampling_weights is not None else ""
        return f"Policy({label}{len(self)} sub-policies{weighted})"


def _sampling_weights(weights: Any, count: int) -> tuple[float, ...]:
    """``weights`` as a tuple of ``count`` positive finite floats with a finite sum."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ValueError(f"'{WEIGHTED_KEY}' must be a list of numbers, one per sub-policy, got {weights!r:.80}")
    if len(weights) != count:
        raise ValueError(f"'{WEIGHTED_KEY}' has {len(weights)} numbers for {count} sub-policies; give one per sub-policy")
    for index, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise ValueError(f"sampling weight {index} must be a finite number > 0, got {weight!r}")
        if weight <= 0:
            raise ValueError(
                f"sampling weight {index} must be > 0, got {weight!r} (leave out a sub-policy that is never to be chosen)"
            )
    result = tuple(float(weight) for weight in weights)
    if not math.isfinite(sum(result)):
        raise ValueError(f"the sampling weights sum to {sum(result)!r}; scale them down")
    return result


def _operation(item: Any) -> Operation:
    if isinstance(item, Operation):
        return item
    if isinstance(item, dict):
        unknown = set(item) - {"op", "probability", "magnitude"}
        missing = {"op", "probability", "magnitude"} - set(item)
        if unknown or missing:
            raise ValueError(
                f"an operation needs exactly the keys op, probability, magnitude; got {sorted(item)}"
            )
        return Operation(item["op"], item["probability"], item["magnitude"])
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and len(item) == 3:
        return Operation(*item)
    raise ValueError(f"an operation must be (op, probability, magnitude), got {item!r}")


def read_policy_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a policy file, refusing files over ``MAX_POLICY_FILE_BYTES``; errors name the file.

    Only regular files are read: a folder, a device or a FIFO (which would block) is an error.
    """
    return read_regular_file(path, MAX_POLICY_FILE_BYTES, "policy file")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _not_json(text)
    return value


def _bounded_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > MAX_JSON_INTEGER_DIGITS:
        raise ValueError(
            f"the integer {text[:12]}... has {len(digits)} digits; JSON numbers here have at most "
            f"{MAX_JSON_INTEGER_DIGITS} digits (they must fit in a float)"
        )
    return int(text)


def parse_json(data: bytes | str, max_bytes: int = MAX_POLICY_FILE_BYTES) -> Any:
    """Strict JSON: UTF-8, at most ``max_bytes``, no duplicate keys, finite numbers that fit in a float.

    The one JSON reader of the package (policy files, presets, Hub files, search checkpoints).
    """
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise ValueError(f"the JSON is larger than the limit of {max_bytes:,} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})") from None
    if len(data) > max_bytes:
        raise ValueError(f"the JSON is larger than the limit of {max_bytes:,} bytes")
    try:
        return json.loads(
            data,
            object_pairs_hook=_unique_keys,
            parse_constant=_not_json,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON data: numpy numbers become Python numbers, non-finite numbers ``None``."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    try:
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise ValueError(f"{where} has a key that is not a string: {key!r}")
            return {key: _json_value(item, f"{where}[{key!r}]") for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [_json_value(item, f"{where}[{index}]") for index, item in enumerate(value)]
    except RecursionError:
        raise ValueError(f"{where} is nested too deeply to be written as JSON") from None
    raise ValueError(f"{where} is not JSON data: {value!r} ({type(value).__name__})")
