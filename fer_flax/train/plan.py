"""The run's plan: the shape a config and its data give a run (epochs, warm-up, image size of each
epoch, steps), as a value of its own.

The config is what the user asked for and is never rewritten; the time budget (`budget`) makes a
plan with the epochs that fit, and its refit replaces the plan. `plan.json` beside `config.json`
keeps the plan a run trains by, so that a resumed run picks it up again.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import ml_collections
from etils import epath

from fer_flax.core.errors import UserError
from fer_flax.data import progressive

PLAN_FILE = 'plan.json'


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """Epochs of `steps_per_epoch` steps; the first `warmup_steps` warm the learning rate up,
  epoch i trains on faces of `image_sizes[i]` pixels, and the last `clean_epochs` with flips as
  their only augmentation."""
  steps_per_epoch: int
  num_epochs: int
  warmup_steps: int
  image_sizes: tuple[int, ...]
  clean_epochs: int = 0

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, steps_per_epoch: int,
             num_epochs: int | None = None, warmup_epochs: float | None = None) -> RunPlan:
    """The plan of `config` (or of `num_epochs` epochs, `warmup_epochs` of them warming up)."""
    num_epochs = num_epochs or config.num_epochs
    if warmup_epochs is None:
      warmup_epochs = warmup_epochs_of(config, num_epochs)
    clean_epochs = config.augment.get('clean_last_epochs', 0)
    if not 0 <= clean_epochs < num_epochs:
      raise UserError(f'config.augment.clean_last_epochs={clean_epochs} in a run of {num_epochs} '
                      'epochs; give fewer epochs than the run has, or 0')
    return cls(steps_per_epoch, num_epochs, int(warmup_epochs * steps_per_epoch),
               tuple(progressive.epoch_sizes(config, num_epochs)), clean_epochs)

  @property
  def total_steps(self) -> int:
    return self.steps_per_epoch * self.num_epochs

  def image_size(self, step: int) -> int:
    """The image size of the epoch `step` falls in."""
    return self.image_sizes[step // self.steps_per_epoch]

  def augmented(self, step: int) -> bool:
    """Whether the epoch `step` falls in is augmented in full (not one of the clean last ones)."""
    return step // self.steps_per_epoch < self.num_epochs - self.clean_epochs

  def resized(self, config: ml_collections.ConfigDict, num_epochs: int) -> RunPlan:
    """The same run, warm-up included, lengthened or shortened to `num_epochs`."""
    return dataclasses.replace(self, num_epochs=num_epochs,
                               image_sizes=tuple(progressive.epoch_sizes(config, num_epochs)))

  def save(self, workdir: epath.PathLike) -> None:
    """Writes the plan beside the run's config (from the first process only)."""
    if jax.process_index():
      return
    (epath.Path(workdir) / PLAN_FILE).write_text(
        json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + '\n')


def warmup_epochs_of(config: ml_collections.ConfigDict, num_epochs: int,
                     scaled: bool = False) -> float:
  """The warm-up epochs of a run of `num_epochs`: `optimizer.warmup_share` of them when the config
  gives a share; else `optimizer.warmup_epochs`, `scaled` by `num_epochs / config.num_epochs` for a
  run the time budget sized (so the warm-up keeps its share of the run)."""
  share = config.optimizer.get('warmup_share', 0.0)
  if share:
    return share * num_epochs
  if scaled:
    return config.optimizer.warmup_epochs * num_epochs / config.num_epochs
  return config.optimizer.warmup_epochs


def load(workdir: epath.PathLike) -> RunPlan | None:
  """The plan a run in `workdir` trains by; None where it saved none (runs from before plans)."""
  path = epath.Path(workdir) / PLAN_FILE
  if not path.exists():
    return None
  fields = json.loads(path.read_text())
  return RunPlan(**{**fields, 'image_sizes': tuple(fields['image_sizes'])})
