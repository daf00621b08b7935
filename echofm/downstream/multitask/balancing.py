"""How the losses of several tasks become the one loss a joint model is trained on.

Task losses differ in scale (an MSE on standardised EF, a cross-entropy over a few views, BCE +
Dice on masks) and in how fast they fall, so a plain sum lets one task dominate the shared
encoder's gradient. Three balancers, named by `JointOptions.loss_balance`, each with per-task
weights `w_t` (default 1):

- `fixed`: `sum_t w_t L_t`.
- `initial`: `sum_t w_t L_t / L_t(0)`, each loss divided by its mean over the training clips
  before the first step, so every task starts at weight `w_t` whatever its units.
- `uncertainty`: `sum_t w_t (exp(-s_t) L_t + s_t)` with a learned log-variance `s_t` per task
  (Kendall, Gal and Cipolla, CVPR 2018): a task whose loss stays high is down-weighted, the
  `+ s_t` term stops every weight going to zero.

A batch holds only the tasks some of its clips are labelled for: the sums run over those.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from echofm.downstream.config import FinetuneConfigError


class LossBalancer(nn.Module):
    """Per-task losses `{task: scalar}` -> one scalar (see the module doc)."""

    name: str = ""
    needs_initial_losses = False
    learning_rate: float | None = None  # of its own parameters; None: the run's base rate

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        self.tasks = tuple(weights)
        self.weights = dict(weights)

    def start(self, initial: dict[str, float]) -> None:
        """Told each task's loss before training (only `initial` uses it)."""

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.term(task, loss) for task, loss in losses.items())  # type: ignore[return-value]

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.weights[task] * loss

    def effective_weights(self) -> dict[str, float]:
        """The factor each task's raw loss is multiplied by now (for the report)."""
        return dict(self.weights)


class FixedWeights(LossBalancer):
    name = "fixed"


class InitialLossNormalised(LossBalancer):
    name = "initial"
    needs_initial_losses = True

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__(weights)
        self.initial = {task: 1.0 for task in self.tasks}

    def start(self, initial: dict[str, float]) -> None:
        for task, value in initial.items():
            if not (math.isfinite(value) and value > 0):
                raise FinetuneConfigError(f"{task}: initial loss {value!r} cannot normalise its loss")
            self.initial[task] = float(value)

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.weights[task] * loss / self.initial[task]

    def effective_weights(self) -> dict[str, float]:
        return {task: self.weights[task] / self.initial[task] for task in self.tasks}


class UncertaintyWeighting(LossBalancer):
    name = "uncertainty"
    # The log-variances learn at their own rate, not the encoder's: an Adam step moves s_t by
    # about the learning rate, and the s_t ~ log L_t it should reach lies a few units from 0, so
    # at the fine-tuning rate (3e-4) it is thousands of steps away, longer than a fine-tuning run,
    # and the balancer stays `fixed` (measured: docs/benchmarks.md, "Multi-task loss balancing").
    learning_rate: float | None = 0.02

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__(weights)
        # s_t = log sigma_t^2, starting at 0: the first steps weigh every task by w_t.
        self.log_vars = nn.ParameterDict({task: nn.Parameter(torch.zeros(())) for task in self.tasks})

    def term(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[task]
        return self.weights[task] * (torch.exp(-s) * loss + s)

    def effective_weights(self) -> dict[str, float]:
        return {task: self.weights[task] * math.exp(-float(self.log_vars[task].detach())) for task in self.tasks}


BALANCERS: dict[str, type[LossBalancer]] = {cls.name: cls for cls in (FixedWeights, InitialLossNormalised, UncertaintyWeighting)}


def make_balancer(name: str, weights: dict[str, float]) -> LossBalancer:
    """The balancer `name` (a key of BALANCERS) with per-task `weights`."""
    try:
        return BALANCERS[name](weights)
    except KeyError:
        raise FinetuneConfigError(f"loss balance {name!r} not in {tuple(BALANCERS)}") from None
