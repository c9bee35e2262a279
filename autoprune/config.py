"""Typed study configuration: one YAML file describes a study.

``load_config(path)`` parses the YAML, validates it once at the edge and returns a
:class:`StudyConfig`; everything downstream receives plain, validated objects.
Every error names the file, the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from autoprune.errors import ConfigError
from autoprune.models.arch import normalize_layer
from autoprune.layout import STUDY_NAME, STUDY_NAME_MAX
from autoprune.pruning.methods import METHODS
from autoprune.pruning.policy import GradClipConfig, Recovery, one_of
from autoprune.pruning.schedules import SCHEDULES
from autoprune.runtime.kernels import Quantize, check_int8_kernel
from autoprune.search.runners import RUNNERS
from autoprune.search.samplers import SAMPLERS
from autoprune.yamlio import load_yaml_file

__all__ = [
    "TaskConfig",
    "ModelConfig",
    "TrainConfig",
    "MeasureConfig",
    "StudyConfig",
    "SearchConfig",
    "load_config",
    "config_from_dict",
    "format_validation_error",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class TaskConfig(_Strict):
    """Where the data comes from: a task spec (see ``autoprune tasks``) and loader knobs."""

    name: str = Field(min_length=1, description="task spec, e.g. uea:JapaneseVowels, mnist1d, synthetic:sines")
    batch_size: int = Field(32, ge=1, le=65536)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)


#: a layer of a front-end, a gap or a head as a study writes it: a kind name or a mapping with ``kind``
LayerEntry = Union[str, dict[str, Any]]


class ModelConfig(_Strict):
    """The model: front-end → recurrent layers → pooling → head (see :mod:`autoprune.models.arch`).

    Either autoprune trains it (``hidden_sizes``, and optionally ``front``, ``between`` and
    ``head`` as lists of layers: ``relu`` or ``{kind: conv1d, out: 32, kernel: 5}``), or it is the
    user's trained model: ``from: package.module:function`` (returns a trained ``torch.nn.Module``)
    or ``checkpoint: FILE`` with ``build: package.module:function`` (builds the untrained module
    the state dict or Lightning checkpoint belongs to); either function may also be named by its
    file, ``path/to/file.py:function``, as a task's data function can. For a user's model
    ``front``, ``rnn`` and ``head`` name its submodules, and ``pooling`` says how it pools
    (found from its outputs when not given); see :mod:`autoprune.reference.user_model`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, populate_by_name=True)

    cell: Literal["lstm", "gru"] = "lstm"
    hidden_sizes: Optional[list[int]] = Field(None, min_length=1, max_length=3)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pooling: Literal["last", "last_output", "mean", "max", "attention", "none"] = Field(
        "last", description="last (final states) | last_output | mean | max | attention | none (one output per frame)"
    )
    attention_dim: int = Field(32, ge=1, le=4096)
    front: Optional[list[LayerEntry]] = Field(
        None, description="layers before the recurrent ones (embedding, linear, conv1d, batchnorm, layernorm, activations, dropout); "
        "for your own model: the names of its front-end submodules"
    )
    between: Optional[list[LayerEntry]] = Field(None, description="layers between every two recurrent layers (norms, activations, dropout)")
    head: Optional[list[LayerEntry]] = Field(
        None, description="the head's hidden layers before the output Linear ({kind: linear, out: 64}, relu, dropout, norms); "
        "for your own model: the names of its head submodules, output Linear last"
    )
    rnn: Optional[list[str]] = Field(None, min_length=1, description="your own model: the names of its nn.LSTM / nn.GRU submodules, in order")
    from_: Optional[str] = Field(None, alias="from", description="package.module:function (or path/to/file.py:function) returning your trained nn.Module")
    checkpoint: Optional[str] = Field(None, description="state dict or Lightning checkpoint of your trained module (with build)")
    build: Optional[str] = Field(None, description="package.module:function (or path/to/file.py:function) building the module a checkpoint belongs to")

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        for size in v or []:
            if size < 1 or size > 8192:
                raise ValueError(f"every hidden size must be in [1, 8192], got {size}")
        return v

    @field_validator("from_", "build")
    @classmethod
    def _function_spec(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError("must look like package.module:function or path/to/file.py:function")
        return v

    @model_validator(mode="before")
    @classmethod
    def _layers(cls, data: Any) -> Any:
        """Layers of a model autoprune trains, as stored (kind and every key); a user's model names submodules instead."""
        if not isinstance(data, dict) or data.get("from") or data.get("from_") or data.get("checkpoint"):
            return data
        out = dict(data)
        for key, place in (("front", "front"), ("between", "between"), ("head", "head")):
            if isinstance(out.get(key), list):
                out[key] = [normalize_layer(entry, place, f"{key}[{i}]") for i, entry in enumerate(out[key])]
        return out

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        if self.from_ and (self.checkpoint or self.build):
            raise ValueError("give either 'from' (a function returning your trained model) or 'checkpoint' with 'build', not both")
        if bool(self.checkpoint) != bool(self.build):
            raise ValueError("'checkpoint' and 'build' go together: the file of weights and the package.module:function that builds the module they belong to")
        if self.user_model and self.hidden_sizes is not None:
            raise ValueError("'hidden_sizes' comes from your trained model with 'from'/'checkpoint'; remove it")
        if not self.user_model and self.hidden_sizes is None:
            raise ValueError(
                "give 'hidden_sizes' (autoprune trains the dense model) or your trained model: "
                "'from: package.module:function' or 'checkpoint: FILE' with 'build: package.module:function'"
            )
        if self.user_model:
            for key in ("front", "rnn", "head"):
                names = getattr(self, key)
                if names is not None and not all(isinstance(n, str) and n for n in names):
                    raise ValueError(f"{key}: with 'from'/'checkpoint' it names submodules of your model (a list of names, e.g. [conv, bn]), got {names!r}")
            if self.between is not None:
                raise ValueError("'between' describes a model autoprune trains; your model's layers between its recurrent modules are found from it")
        elif self.rnn is not None:
            raise ValueError("'rnn' names the recurrent submodules of your own model (with 'from'/'checkpoint'); a model autoprune trains has hidden_sizes")
        return self

    @property
    def user_model(self) -> bool:
        """True when the dense model is the user's trained module (no dense training)."""
        return bool(self.from_ or self.checkpoint)

    def described(self) -> dict[str, Any]:
        """The keys that describe the model (the dense cache key's content): the keys new in issue 20
        (front, between, head, rnn) only when given, so that earlier studies keep their keys."""
        out = self.model_dump(exclude={"from_", "checkpoint", "build"})
        return {k: v for k, v in out.items() if k not in ("front", "between", "head", "rnn") or v is not None}


class TrainConfig(_Strict):
    """Dense training settings."""

    epochs: int = Field(30, ge=1, le=10000)
    lr: float = Field(3e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    grad_clip: GradClipConfig = Field(default_factory=GradClipConfig)
    max_seq_len: Optional[int] = Field(None, ge=1, description="random training windows of this length")
    lr_schedule: Literal["none", "cosine"] = "cosine"
    threads: int = Field(1, ge=1, le=256, description="torch threads while training (tiny RNNs run best on one)")
    accelerator: Literal["cpu", "gpu", "auto"] = Field(
        "cpu", description="where the dense model and every trial train (Lightning's accelerator): cpu | gpu | auto"
    )
    devices: int = Field(1, ge=1, le=1, description="devices per fit: one (more GPUs run more trials side by side: --gpus-per-trial with Ray)")
    select: Literal["last", "best_val"] = Field(
        "last", description="keep the last epoch's weights, or the epoch with the best validation accuracy"
    )


class MeasureConfig(_Strict):
    """How latency is measured: the deployment setting the budget refers to."""

    batch_size: int = Field(1, ge=1, le=65536, description="the deployment's batch (usually 1)")
    seq_len: Optional[int] = Field(None, ge=1, le=1_000_000, description="defaults to the task's longest sequence")
    threads: int = Field(1, ge=1, le=256)
    runtime: Literal["torch", "onnxruntime"] = "torch"
    device: Literal["cpu", "cuda"] = Field("cpu", description="where latency is measured: cpu (the default deployment) | cuda (runtime torch only)")
    repeats: int = Field(30, ge=3)
    warmup: int = Field(5, ge=0)


Range = tuple[float, float]


def _in_range(lo: float, hi: float, hi_open: bool = False, log_scale: str = "") -> AfterValidator:
    """The validator of a searched ``[low, high]`` range: ordered and inside ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``).

    ``log_scale`` names the values of a range searched on a log scale (``learning rates``): its low end must be > 0 too.
    """

    def check(v: Range) -> Range:
        a, b = v
        if log_scale and a <= 0:
            raise ValueError(f"{log_scale} must be > 0 (log scale), got [{a}, {b}]")
        if not a <= b:
            raise ValueError(f"empty or inverted range [{a}, {b}]: need low <= high")
        if a < lo or (b >= hi if hi_open else b > hi):
            raise ValueError(f"range [{a}, {b}] must lie in [{lo}, {hi}{')' if hi_open else ']'}")
        return v

    return AfterValidator(check)


#: a range of fractions in [0, 1): sparsities, unit fractions, distillation weights
Fractions = Annotated[Range, _in_range(0.0, 1.0, hi_open=True)]


class SparsitySpace(_Strict):
    """How a sampled size may be spent (search/sizing.py): what varies per layer and matrix, and the limits.

    ``groups``: ``global`` (one keep ratio and one weight density for the whole model), ``per_layer`` (each
    recurrent layer its own multiplier), ``per_matrix`` (also the input-to-hidden vs hidden-to-hidden
    density balance). ``range`` / ``ih`` / ``hh`` / ``head`` limit single-weight sparsity (once a matrix is
    pruned at all, at least the low end), ``units`` the fraction of a layer's hidden units removed.
    """

    groups: Literal["global", "per_layer", "per_matrix", "per_gate"] = "per_matrix"
    range: Fractions = (0.5, 0.98)
    ih: Optional[Fractions] = None
    hh: Optional[Fractions] = None
    head: Optional[Fractions] = Field(None, description="prune the head's weights too (unpruned when absent)")
    units: Fractions = Field((0.1, 0.75), description="fraction of hidden units removed per layer (hidden_unit)")

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: str) -> str:
        if v == "per_gate":
            raise ValueError(
                "per_gate is not searched by the size-first space (each trial samples its size, then per layer and ih vs hh how "
                "to spend it); use per_matrix, or give a per-gate policy to `autoprune prune --policy`"
            )
        return v


class ScheduleSpace(_Strict):
    kinds: Annotated[list[str], one_of("schedule", SCHEDULES)] = Field(default_factory=lambda: ["agp"], min_length=1)
    start_epoch: int = Field(0, ge=0)
    end_before_last: int = Field(2, ge=0, description="the schedule ends this many epochs before the last fine-tune epoch")
    frequency: int = Field(1, ge=1)
    tolerance: Range = (0.02, 0.2)

    def window(self, epochs: int, start_epoch: Optional[int] = None) -> tuple[int, int]:
        """The fine-tune epochs pruning starts and ends at when a policy fine-tunes ``epochs`` epochs: from
        ``start_epoch`` (this space's unless given) to ``end_before_last`` epochs before the last, both kept inside the run."""
        start = min(self.start_epoch if start_epoch is None else start_epoch, epochs - 1)
        return start, max(start, epochs - 1 - self.end_before_last)


class GradClipSpace(_Strict):
    range: Annotated[Range, _in_range(1e-12, 1e12, log_scale="clipping thresholds")] = Field(
        (0.25, 5.0), description="gradient-clipping threshold, searched on a log scale"
    )
    algorithms: list[Literal["norm", "value"]] = Field(default_factory=lambda: ["norm"], min_length=1)


class FinetuneSpace(_Strict):
    epochs: tuple[int, int] = (6, 10)
    lr: Annotated[Range, _in_range(1e-12, 10.0, log_scale="learning rates")] = (3e-4, 3e-3)
    min_epoch_steps: Optional[int] = Field(
        None, ge=1, le=100000,
        description="a fine-tune epoch is at least this many optimizer steps, so epoch budgets do not shrink with the data set (autoprune.tasks.budget)",
    )

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"need 1 <= low <= high, got [{v[0]}, {v[1]}]")
        return v


class ConstraintsConfig(_Strict):
    """Budgets. Latency is measured as the study's ``measure:`` section says."""

    max_latency_ms: Optional[float] = Field(None, gt=0)
    max_size_bytes: Optional[int] = Field(None, gt=0)


class EarlyStopConfig(_Strict):
    """Stop hopeless trials: after ``after_epochs`` fine-tune epochs, validation accuracy below dense minus ``max_drop``."""

    after_epochs: Optional[int] = Field(3, ge=1)
    max_drop: float = Field(0.2, gt=0.0, le=1.0)


class RecipeCheckConfig(_Strict):
    """Before a search: the fine-tune with nothing pruned must keep the dense validation accuracy (search/recipe_check.py)."""

    enabled: bool = True
    max_drop: float = Field(0.05, ge=0.0, le=1.0, description="allowed validation-accuracy drop (at least one validation sequence)")


class FidelityConfig(_Strict):
    """Multi-fidelity (search/fidelity.py): sampled trials prune and fine-tune only; the best of each size tier
    are promoted to the space's retraining (``search.recovery``: scratch, else rewind), as new trials that start
    from the promoted trial's pruned weights."""

    enabled: bool = Field(False, description="needs a retraining (rewind or scratch) among search.recovery")
    share: float = Field(0.25, gt=0.0, lt=1.0, description="share of search.trials spent on promotions")
    eta: int = Field(3, ge=2, le=100, description="promote a trial in the top 1/eta of its size tier as soon as it is there")
    max_size_ratio: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="promote only trials of at most this fraction of the dense model's bytes (the sizes you will deploy); null: every size"
    )
    finetune_epochs: Optional[int] = Field(
        None,
        ge=1,
        le=10000,
        description="fine-tune epochs of the cheap rung (every trial that is not a promotion: it prunes over them and is ranked after them); "
        "the promotions retrain from its pruned weights; null: search.finetune.epochs, sampled; ignored while enabled is false",
    )


class RayConfig(_Strict):
    """The Ray Tune runner (``search.backend: ray``; search/runners/ray.py)."""

    address: Optional[str] = Field(
        None, description="null: start a local Ray instance (files under runs/<study>/ray); auto or HOST:PORT: join that cluster"
    )
    concurrency: int = Field(2, ge=1, le=1024, description="trials running at once")
    cpus_per_trial: float = Field(1.0, gt=0, le=256, description="CPUs Ray reserves per trial (torch threads: at least 1)")
    gpus_per_trial: float = Field(0.0, ge=0, le=64, description="GPUs Ray reserves per trial (a fraction shares one GPU); needs train.accelerator gpu or auto")

    @field_validator("address")
    @classmethod
    def _address(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v.startswith("ray://"):
            raise ValueError(f"Ray Client addresses are not supported ({v!r}): run the search on a node of the cluster with auto or the head's HOST:PORT")
        if v is not None and v != "auto" and not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}", v):
            raise ValueError(f"must be auto or HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6379); got {v!r}")
        return v


class SearchConfig(_Strict):
    """The pruning search space, objectives, constraints and sampler."""

    size: Optional[Fractions] = Field(
        None,
        description="range of the model size a trial targets, as a fraction of the dense model's float32 bytes, sampled on a log "
        "scale (size first: then how to spend it); null: from what the limits reach (at least 0.004) up to 0.5",
    )
    sparsity: SparsitySpace = Field(default_factory=SparsitySpace)
    methods: Annotated[list[str], one_of("pruning method", METHODS)] = Field(default_factory=lambda: ["magnitude", "taylor"], min_length=1)
    granularities: list[Literal["unstructured", "hidden_unit"]] = Field(default_factory=lambda: ["unstructured", "hidden_unit"], min_length=1)
    schedule: ScheduleSpace = Field(default_factory=ScheduleSpace)
    grad_clip: GradClipSpace = Field(default_factory=GradClipSpace)
    finetune: FinetuneSpace = Field(default_factory=FinetuneSpace)
    regularization: Annotated[Range, _in_range(1e-12, 1e6, log_scale="regularization strengths")] = Field(
        (1e-6, 1e-3), description="l1 / group_lasso strength (log scale)"
    )
    max_seq_len: Optional[list[Optional[int]]] = Field(None, description="choices of training window length (null: whole sequences)")
    distillation: Optional[Fractions] = Field(None, description="range of the weight of distillation from the dense model (null: none)")
    recovery: list[Recovery] = Field(
        default_factory=lambda: ["finetune"],
        min_length=1,
        description="recoveries after pruning to choose from: finetune | rewind (dense schedule from the pruned weights) | scratch (found architecture, fresh init)",
    )
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    recovery_epochs: Optional[int] = Field(
        None,
        ge=1,
        description="epochs of the rewind / scratch retraining, its learning-rate schedule compressed to them (null: the dense recipe's train.epochs)",
    )
    quantize: list[Quantize] = Field(
        default_factory=lambda: ["none"], min_length=1, description="precisions searched after pruning: [none], [int8] or [none, int8]"
    )
    objectives: list[Literal["val_accuracy", "size_bytes", "latency_ms"]] = Field(default_factory=lambda: ["val_accuracy", "size_bytes"])
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    recipe_check: RecipeCheckConfig = Field(default_factory=RecipeCheckConfig)
    warm_start: bool = Field(
        True, description="begin a new study with uniform hand-style policies (a few global sparsities and unit fractions)"
    )
    sampler: str = Field("tpe", description="Optuna sampler: a name in autoprune.search.samplers.SAMPLERS (tpe: benchmarks/results/sampler_choice.md)")
    population_size: int = Field(10, ge=2, description="NSGA-II generation size")
    trials: int = Field(30, ge=1)
    timeout: Optional[float] = Field(None, gt=0, description="seconds")
    workers: int = Field(1, ge=1, le=64)
    backend: Annotated[str, one_of("search backend", RUNNERS)] = Field("local", description="runner of the trials: local (this machine: in-process or worker processes) | ray (Ray Tune)")
    ray: RayConfig = Field(default_factory=RayConfig)
    seed: int = Field(0, ge=0)
    max_consecutive_failures: int = Field(
        10, ge=1, le=100000, description="stop the search (parent run FAILED) after this many failed trials in a row"
    )

    @field_validator("max_seq_len")
    @classmethod
    def _seq_lens(cls, v: Optional[list[Optional[int]]]) -> Optional[list[Optional[int]]]:
        if v is not None:
            if not v:
                raise ValueError("give at least one choice, e.g. [null, 16] (null: whole sequences), or leave the key out")
            for n in v:
                if n is not None and not 1 <= n <= 1_000_000:
                    raise ValueError(f"every training window length must be null (whole sequences) or an integer in [1, 1000000], got {n}")
        return v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"must be one of {', '.join(repr(name) for name in SAMPLERS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SearchConfig":
        if self.objectives[:2] != ["val_accuracy", "size_bytes"] or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(
                f"objectives must start with [val_accuracy, size_bytes], optionally followed by latency_ms; got {self.objectives}"
            )
        if not any(g in METHODS[m].granularities for m in self.methods for g in self.granularities):
            raise ValueError(f"no method in {self.methods} supports any granularity in {self.granularities}")
        if self.fidelity.enabled and set(self.recovery) <= {"finetune"}:
            raise ValueError("fidelity.enabled promotes the best trials to a retraining: offer rewind or scratch in search.recovery")
        rung, check = self.fidelity.finetune_epochs, self.early_stop.after_epochs
        if self.fidelity.enabled and rung is not None and check is not None:
            end = self.schedule.window(rung)[1]
            if check > end:  # measured: benchmarks/results/sampler_choice_rung4.md
                raise ValueError(
                    f"fidelity.finetune_epochs {rung} ends pruning at epoch {end}, so the hopeless check after {check} epochs (early_stop.after_epochs) "
                    f"judges every trial at full sparsity before it recovers and stops the small ones; give at least {check + 1 + self.schedule.end_before_last} "
                    f"rung epochs, or early_stop.after_epochs: null"
                )
        if self.backend != "local" and self.workers > 1:
            raise ValueError(
                f"workers={self.workers} starts local worker processes; with backend {self.backend} set ray.concurrency (--concurrency) instead"
            )
        return self


class StudyConfig(_Strict):
    """A whole study: task, model, dense training, measurement (and later the search)."""

    study: str = Field(pattern=STUDY_NAME, max_length=STUDY_NAME_MAX)
    seed: int = Field(0, ge=0)
    task: TaskConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    source: Optional[str] = Field(None, exclude=True, description="file the config was read from")

    @field_validator("search")
    @classmethod
    def _int8_kernel(cls, v: SearchConfig, info: ValidationInfo) -> SearchConfig:
        model, measure = info.data.get("model"), info.data.get("measure")
        if "int8" in v.quantize and model is not None and measure is not None:
            try:
                check_int8_kernel(measure.runtime, model.cell, "quantize")
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return v

    @model_validator(mode="after")
    def _devices(self) -> "StudyConfig":
        if self.search.ray.gpus_per_trial > 0 and self.train.accelerator == "cpu":
            raise ValueError(
                f"search.ray.gpus_per_trial={self.search.ray.gpus_per_trial:g} reserves GPUs for trials that train on the CPU: "
                "set train.accelerator: gpu (or auto)"
            )
        if self.measure.device == "cuda" and self.measure.runtime != "torch":
            raise ValueError(
                f"measure.device cuda measures latency with runtime torch; got runtime {self.measure.runtime} (ONNX Runtime is measured on the CPU)"
            )
        return self

    def dense_key(self) -> dict[str, Any]:
        """Everything that determines the dense checkpoint (the cache key's content)."""
        # where it trains is left out while it is the default CPU: checkpoints cached before these keys existed keep their keys
        on_cpu = {"accelerator", "devices"} if (self.train.accelerator, self.train.devices) == ("cpu", 1) else set()
        return {
            "task": self.task.model_dump(),
            # the user-model keys are all None for a trained-here model: left out, cached checkpoints keep their keys
            "model": self.model.described(),
            "train": self.train.model_dump(exclude=on_cpu),
            "seed": self.seed,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"source"}, by_alias=True)  # by alias: model.from, as written


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: file, key path, bad value, what is allowed."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<top level>"
    kind = first["type"]
    msg = first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(first["loc"])
        text = f"{source}: unknown key '{loc}'" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
    elif kind == "missing":
        text = f"{source}: missing required key '{loc}'"
    elif not first["loc"] or kind == "value_error" and isinstance(first.get("input"), dict):
        text = f"{source}: {loc}: {msg}"
    else:
        text = f"{source}: {loc}: {msg} (got {first.get('input')!r})"
    more = len(err.errors()) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return text


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = StudyConfig
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = fields[part].annotation
    fields = getattr(model, "model_fields", None)
    return [f.alias or k for k, f in fields.items() if k != "source"] if fields else []


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def config_from_dict(data: Any, source: str = "<config>", overrides: Optional[dict[str, Any]] = None) -> StudyConfig:
    """Validate a parsed config mapping.

    Args:
        data: the parsed YAML document.
        source: name shown in error messages (usually the file path).
        overrides: dotted keys replacing values, e.g. ``{"study": "x", "train.epochs": 2}``. A ``None``
            value sets the key to null (``{"search.early_stop.after_epochs": None}`` turns early stopping
            off); leave a key out to keep the file's value.

    Raises:
        ConfigError: one line naming the source, key path, bad value and what is allowed.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys (study, task, model, ...), got {type(data).__name__}")
    data = json.loads(json.dumps(data, default=str))  # deep copy, plain types
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    try:
        return StudyConfig.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> StudyConfig:
    """Load and validate a study YAML file.

    Args:
        path: the YAML file.
        overrides: dotted keys replacing values before validation.

    Returns:
        The validated :class:`StudyConfig`.

    Raises:
        ConfigError: malformed YAML (file and line) or an invalid value (file and key path).
    """
    return config_from_dict(load_yaml_file(path), source=str(path), overrides=overrides)
