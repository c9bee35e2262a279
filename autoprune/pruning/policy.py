"""PruningPolicy: one plain, serialisable description of how to prune a model.

```yaml
method: magnitude            # magnitude | taylor | confidence | l1 | group_lasso | random
granularity: unstructured    # unstructured | hidden_unit
sparsity: 0.9                # or a mapping {rnn.0.ih: 0.8, rnn.0.hh: 0.95, head: 0.5, ...}
weight_sparsity: null        # hybrid (hidden_unit only): then prune this fraction of the remaining weights, e.g. {rnn.0.hh: 0.6}
schedule: {kind: agp, start_epoch: 0, end_epoch: 6, frequency: 1}
grad_clip: {value: 1.0, algorithm: norm}
finetune: {epochs: 8, lr: 0.001}
quantize: none               # none | int8 (applied after compaction; studies from before the key read as none)
recovery: finetune           # finetune | rewind | scratch (after pruning; autoprune.pruning.recovery)
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Dict, Iterable, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autoprune.errors import ConfigError
from autoprune.pruning.methods import GRANULARITIES, METHODS, get_method
from autoprune.pruning.schedules import SCHEDULES, make_schedule
from autoprune.runtime.kernels import Quantize
from autoprune.yamlio import load_yaml_file, stable_hash

__all__ = ["one_of", "Recovery", "GradClipConfig", "ScheduleConfig", "FinetuneConfig", "DistillConfig", "PruningPolicy", "load_policy", "policy_from_dict"]


#: a policy's ``recovery`` after pruning (autoprune.pruning.recovery)
Recovery = Literal["finetune", "rewind", "scratch"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def one_of(what: str, names: Union[Iterable[str], Callable[[], Iterable[str]]]) -> AfterValidator:
    """The validator of a registered name, or of a list of them: ``unknown <what> 'x'; valid: a, b``.

    ``names`` is the registry (or a function listing it), read when a value is validated.
    """

    def check(value: Any) -> Any:
        valid = list(names() if callable(names) else names)
        for name in [value] if isinstance(value, str) else value:
            if name not in valid:
                raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")
        return value

    return AfterValidator(check)


class GradClipConfig(_Strict):
    """Gradient clipping: threshold and algorithm (Lightning's ``gradient_clip_*``); a policy's and the dense training's."""

    value: Optional[float] = Field(1.0, gt=0.0)
    algorithm: Literal["norm", "value"] = "norm"


class ScheduleConfig(_Strict):
    """When to prune: ``kind`` (one_shot | linear | agp | dynamic) and its epochs."""

    kind: Annotated[str, one_of("schedule", SCHEDULES)] = "agp"
    start_epoch: int = Field(0, ge=0)
    end_epoch: Optional[int] = Field(None, ge=0, description="default: two epochs before the last fine-tune epoch")
    frequency: int = Field(1, ge=1)
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    tolerance: float = Field(0.05, ge=0.0, description="dynamic only: allowed relative rise of validation loss")


class FinetuneConfig(_Strict):
    """Fine-tuning while pruning."""

    epochs: int = Field(8, ge=1, le=10000)
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    min_epoch_steps: Optional[int] = Field(
        None, ge=1, le=100000, description="an epoch is at least this many optimizer steps (small data sets; see autoprune.tasks.budget)"
    )


class DistillConfig(_Strict):
    """Distil from the dense model while fine-tuning: loss = (1 - weight)·CE + weight·T²·KL."""

    weight: float = Field(0.0, ge=0.0, lt=1.0)
    temperature: float = Field(2.0, gt=0.0, le=100.0)


class PruningPolicy(_Strict):
    """How to prune: method, granularity, target sparsity, schedule, clipping, fine-tuning."""

    method: Annotated[str, one_of("pruning method", METHODS)] = "magnitude"
    granularity: Annotated[str, one_of("granularity", GRANULARITIES)] = "unstructured"
    sparsity: Union[float, Dict[str, float]] = 0.5
    weight_sparsity: Optional[Union[float, Dict[str, float]]] = Field(
        None,
        description="hybrid (granularity hidden_unit only): after the hidden units go, this fraction of each remaining matrix's "
        "weights is pruned unstructured (one number, or per matrix / gate block: {rnn.0.ih: 0.5, rnn.0.hh: 0.7})",
    )
    scope: Literal["per_group", "global"] = Field(
        "per_group", description="per_group: each target pruned to its own sparsity; global: one threshold across all targets"
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip: GradClipConfig = Field(default_factory=GradClipConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    distillation: DistillConfig = Field(default_factory=DistillConfig)
    recovery: Recovery = Field(
        "finetune",
        description="after pruning: finetune (only the fine-tuning above) | rewind (retrain the pruned weights with the dense "
        "schedule) | scratch (train the found architecture from a fresh initialisation with the dense schedule); "
        "see autoprune.pruning.recovery",
    )
    regularization: float = Field(1e-5, ge=0.0, description="strength of the l1 / group_lasso penalty")
    max_seq_len: Optional[int] = Field(None, ge=1)
    calibration_batches: int = Field(8, ge=1, description="batches scored by taylor / confidence")
    quantize: Quantize = Field(
        "none", description="int8: weights int8 after pruning and compaction, activations quantized at run time (autoprune.runtime.quantize)"
    )

    @field_validator("sparsity", "weight_sparsity")
    @classmethod
    def _sparsity(cls, v: Optional[Union[float, Dict[str, float]]]) -> Optional[Union[float, Dict[str, float]]]:
        if v is None:
            return v
        if isinstance(v, dict) and not v:
            raise ValueError(
                "an empty mapping prunes nothing; give one number for every group (sparsity: 0.7) "
                "or a sparsity per group name (sparsity: {rnn.0.ih: 0.8, rnn.0.hh: 0.6})"
            )
        values = v.values() if isinstance(v, dict) else [v]
        for value in values:
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {value}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PruningPolicy":
        get_method(self.method, self.granularity)  # raises ConfigError for pairs that make no sense
        end = self.schedule_end
        last = self.finetune.epochs - 1
        if end > last:
            # without an explicit end_epoch the end defaults to start_epoch: name the key the user set
            key = "end_epoch" if self.schedule.end_epoch is not None else "start_epoch"
            raise ValueError(
                f"schedule.{key}={end} is after the last fine-tune epoch ({last}, epochs count from 0); "
                f"lower schedule.{key} or raise finetune.epochs"
            )
        if self.schedule.start_epoch > end:
            raise ValueError(f"schedule.start_epoch={self.schedule.start_epoch} is after schedule.end_epoch={end}")
        if self.scope == "global" and self.granularity != "unstructured":
            raise ValueError("scope 'global' compares single weights across matrices: it needs granularity 'unstructured'")
        if self.scope == "global" and isinstance(self.sparsity, dict):
            raise ValueError("scope 'global' uses one threshold for all targets: give sparsity as one number")
        if self.weight_sparsity is not None:
            if self.granularity != "hidden_unit":
                raise ValueError("weight_sparsity prunes what is left after hidden units go: it needs granularity 'hidden_unit' (for single weights alone use sparsity)")
            get_method(self.method, "unstructured")  # the same method scores the single weights
        return self

    @property
    def hybrid(self) -> bool:
        """Hidden units removed, then the remaining weights pruned unstructured."""
        return self.weight_sparsity is not None

    @property
    def schedule_end(self) -> int:
        if self.schedule.end_epoch is not None:
            return self.schedule.end_epoch
        return max(self.schedule.start_epoch, self.finetune.epochs - 3)

    def make_schedule(self):
        s = self.schedule
        return make_schedule(
            s.kind,
            start_epoch=s.start_epoch,
            end_epoch=self.schedule_end,
            frequency=s.frequency,
            last_epoch=self.finetune.epochs - 1,
            tolerance=s.tolerance,
        )

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump(mode="json")

    def key(self) -> str:
        return stable_hash(self.to_dict())

    def flat_params(self) -> Dict[str, Any]:
        """Readable flat params for MLflow: ``sparsity.rnn.0.hh``, ``schedule.kind``, ``grad_clip.value``..."""
        out: Dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = obj

        data = self.to_dict()
        if not isinstance(data["sparsity"], dict):
            data["sparsity"] = {"all": data["sparsity"]}
        walk("", data)
        return out


def policy_from_dict(data: Any, source: str = "<policy>") -> PruningPolicy:
    """Validate a policy mapping; errors name the source, key, value and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a policy must be a mapping (method, granularity, sparsity, ...), got {type(data).__name__}")
    try:
        return PruningPolicy.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        # drop pydantic's union-member names (``sparsity.float``) from the key path
        loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("float", "dict[", "int")))
        if first["type"] == "extra_forbidden":
            model: Any = PruningPolicy
            for part in first["loc"][:-1]:
                model = getattr(model, "model_fields", {}).get(part)
                model = model.annotation if model is not None else None
            allowed = list(getattr(model, "model_fields", {}))
            raise ConfigError(
                f"{source}: unknown policy key '{loc}'" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
            ) from None
        msg = first["msg"].removeprefix("Value error, ")
        if not loc:  # a check across several keys
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}: {loc}: {msg} (got {first.get('input')!r})") from None
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_policy(path: str | Path) -> PruningPolicy:
    """Read a policy YAML file (``autoprune prune --policy``)."""
    return policy_from_dict(load_yaml_file(path), source=str(path))
