"""Pruning schedules: how much of the final sparsity is applied at which epoch.

A schedule answers, at the start of each fine-tune epoch, whether to take a pruning
step and which fraction ``ramp`` ∈ [0, 1] of the way from the initial to the final
sparsity the model should then be at; a target's sparsity is
``s_i + (s_f - s_i) * ramp``. Registered by name (``SCHEDULES``): the YAML names.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Dict, Optional, Type

from autoprune.errors import ConfigError

__all__ = ["Schedule", "OneShot", "Linear", "AGP", "Dynamic", "SCHEDULES", "make_schedule"]

SCHEDULES: Dict[str, Type["Schedule"]] = {}


def register_schedule(cls: Type["Schedule"]) -> Type["Schedule"]:
    SCHEDULES[cls.name] = cls
    return cls


class Schedule:
    """Base class: pruning steps at ``start, start + frequency, ...`` up to and including ``end``."""

    name: ClassVar[str] = ""

    def __init__(self, start_epoch: int, end_epoch: int, frequency: int = 1, last_epoch: Optional[int] = None, **_: object) -> None:
        if start_epoch < 0 or end_epoch < start_epoch:
            raise ConfigError(f"schedule: need 0 <= start_epoch <= end_epoch, got start_epoch={start_epoch}, end_epoch={end_epoch}")
        if frequency < 1:
            raise ConfigError(f"schedule.frequency: must be >= 1 epoch, got {frequency}")
        self.start = start_epoch
        self.end = end_epoch
        self.frequency = frequency
        self.last_epoch = end_epoch if last_epoch is None else last_epoch
        self.ramp_now = 0.0

    def step_epochs(self) -> list[int]:
        epochs = list(range(self.start, self.end + 1, self.frequency))
        if epochs[-1] != self.end:
            epochs.append(self.end)
        return epochs

    def planned_ramp(self, epoch: int) -> float:
        raise NotImplementedError

    def decide(self, epoch: int, val_loss: Optional[Callable[[], float]] = None) -> Optional[float]:
        """The ramp to prune to at the start of ``epoch``, or None for no step now."""
        if epoch in self.step_epochs():
            self.ramp_now = self.planned_ramp(epoch)
            return self.ramp_now
        return None

    def finished(self) -> bool:
        return self.ramp_now >= 1.0

    def state_dict(self) -> dict:
        return {"ramp_now": self.ramp_now}

    def load_state_dict(self, state: dict) -> None:
        self.ramp_now = state["ramp_now"]


@register_schedule
class OneShot(Schedule):
    """Everything at ``start_epoch``, then fine-tune."""

    name = "one_shot"

    def step_epochs(self) -> list[int]:
        return [self.start]

    def planned_ramp(self, epoch: int) -> float:
        return 1.0


@register_schedule
class Linear(Schedule):
    """Sparsity grows linearly from ``start_epoch`` to ``end_epoch``."""

    name = "linear"

    def planned_ramp(self, epoch: int) -> float:
        if self.end == self.start:
            return 1.0
        return min(max((epoch - self.start) / (self.end - self.start), 0.0), 1.0)


@register_schedule
class AGP(Schedule):
    """Automated gradual pruning (Zhu & Gupta 2017, eq. 1):

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n Δt))^3, t = t0, t0 + Δt, ..., t0 + n Δt,
    i.e. ``ramp = 1 - (1 - (t - t0)/(end - start))^3``: fast at first, slow near the end.
    """

    name = "agp"

    def planned_ramp(self, epoch: int) -> float:
        if self.end == self.start:
            return 1.0
        p = min(max((epoch - self.start) / (self.end - self.start), 0.0), 1.0)
        return 1.0 - (1.0 - p) ** 3


@register_schedule
class Dynamic(Schedule):
    """Equal steps, each taken only while the model keeps up.

    The next step is taken only if validation loss is within ``tolerance`` (relative) of
    its value just before the previous step; otherwise the schedule holds and the model
    recovers for another ``frequency`` epochs. Holding can run past ``end_epoch``, up to the
    last fine-tune epoch: when the remaining opportunities equal the remaining steps the
    step is taken anyway, so the target is always reached by the last epoch.
    """

    name = "dynamic"

    def __init__(self, start_epoch: int, end_epoch: int, frequency: int = 1, last_epoch: Optional[int] = None, tolerance: float = 0.05, **kw: object) -> None:
        super().__init__(start_epoch, end_epoch, frequency, last_epoch)
        if tolerance < 0:
            raise ConfigError(f"schedule.tolerance: must be >= 0, got {tolerance}")
        self.tolerance = tolerance
        self.n_steps = len(super().step_epochs())
        self.steps_taken = 0
        self.ref_loss: Optional[float] = None
        self.held = 0

    def planned_ramp(self, epoch: int) -> float:
        return self.steps_taken / self.n_steps

    def decide(self, epoch: int, val_loss: Optional[Callable[[], float]] = None) -> Optional[float]:
        if self.steps_taken >= self.n_steps or epoch < self.start or (epoch - self.start) % self.frequency:
            return None
        opportunities_left = (self.last_epoch - epoch) // self.frequency + 1
        must_step = opportunities_left <= self.n_steps - self.steps_taken
        loss_now = val_loss() if val_loss is not None else None
        if self.steps_taken > 0 and not must_step and loss_now is not None and self.ref_loss is not None:
            if loss_now > self.ref_loss * (1.0 + self.tolerance):
                self.held += 1
                return None
        self.ref_loss = loss_now
        self.steps_taken += 1
        self.ramp_now = self.steps_taken / self.n_steps
        return self.ramp_now

    def state_dict(self) -> dict:
        return {"ramp_now": self.ramp_now, "steps_taken": self.steps_taken, "ref_loss": self.ref_loss, "held": self.held}

    def load_state_dict(self, state: dict) -> None:
        self.ramp_now = state["ramp_now"]
        self.steps_taken = state["steps_taken"]
        self.ref_loss = state["ref_loss"]
        self.held = state.get("held", 0)


def make_schedule(kind: str, **params: object) -> Schedule:
    """Build a registered schedule by name.

    Raises:
        ConfigError: unknown name (lists the valid ones).
    """
    try:
        cls = SCHEDULES[kind]
    except KeyError:
        raise ConfigError(f"schedule.kind: unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}") from None
    return cls(**params)
