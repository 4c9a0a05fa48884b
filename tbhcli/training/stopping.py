"""Early stopping: end training when the validation score has stopped improving.

Rule: after every validation, a score above the best so far by more than `min_delta` becomes the
new best (and its weights are kept); training stops once at least `min_steps` steps are done and
the best is `patience` steps old. The run then keeps the best weights, not the last ones.
"""

from dataclasses import asdict, dataclass

import torch


@dataclass
class EarlyStopping:
    """The stopping rule and its state (saved in checkpoints, so a resumed run stops the same)."""

    patience: int  # steps without improvement before stopping
    min_steps: int  # never stop before this step
    min_delta: float = 0.002  # smaller gains count as no improvement (score noise)
    best_score: float = float("-inf")
    best_step: int = 0

    def update(self, step: int, score: float) -> bool:
        """Record a validation score; True when it is the new best."""
        if score > self.best_score + self.min_delta or self.best_step == 0:
            self.best_score, self.best_step = score, step
            return True
        return False

    def should_stop(self, step: int) -> bool:
        waited = step - self.best_step
        return self.best_step > 0 and step >= self.min_steps and waited >= self.patience

    def earliest_stop(self, step: int) -> int:
        """The first step at which the run stops if the score does not improve from `step` on
        (a lower bound for the progress bar's ETA)."""
        waited_from = self.best_step if self.best_step > 0 else step
        return max(self.min_steps, waited_from + self.patience, step)

    def state(self) -> dict:
        return asdict(self)


def copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's weights (the best encoder so far)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
