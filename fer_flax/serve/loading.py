"""The one way to load a trained model: from the package's own format (`--model`: "pretrained"
or a folder `python -m fer_flax.export` wrote) or from a training run's checkpoint (`--workdir`,
`--step`). Evaluate, predict, export, plots and the Predictor all load through here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from fer_flax.core.errors import UserError
from fer_flax.serve import package
from fer_flax.train import workdirs


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A model's training config and evaluation variables, and where they came from: the run's
  workdir or the package folder, the training step, and the accuracy training measured for it on
  `config.data.eval_split` (None if it measured none)."""
  config: ml_collections.ConfigDict
  variables: dict[str, Any]
  source: str
  step: int
  accuracy: float | None = None


def check_source(model: str | None, workdir: str | None, step: int | None = None) -> None:
  """Refuses anything but one of --model and --workdir (--step with --workdir only)."""
  if (model is None) == (workdir is None):
    raise UserError('give exactly one of --model ("pretrained", or a folder written by python -m '
                    'fer_flax.export) and --workdir (a training run)')
  if step is not None and workdir is None:
    raise UserError('--step picks a checkpoint of a training run: give it with --workdir')


def load_model(model: str | None = None, workdir: str | None = None,
               step: int | None = None) -> LoadedModel:
  """The model `model` names, or the best checkpoint (or `step`) of the run in `workdir`."""
  check_source(model, workdir, step)
  if workdir is not None:
    config, variables, step = workdirs.restore_variables(workdir, step)
    metrics = workdirs.manager(workdir, config, read_only=True).metrics(step) or {}
    return LoadedModel(config, variables, str(workdir), step, metrics.get('accuracy'))
  directory = package.resolve(model)
  config, variables, info = package.load(directory)
  return LoadedModel(config, variables, str(directory), info['step'],
                     info.get('eval_accuracy_float32'))
