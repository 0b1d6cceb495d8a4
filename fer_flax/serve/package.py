"""The package's own model format: `model.msgpack` (the variables in float16, half the size) and
`model.json` (the model config and where it came from). The shipped model is one; `python -m
fer_flax.export` writes others. No TensorFlow.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np

from fer_flax import models
from fer_flax.core.errors import UserError
from fer_flax.train import workdirs

MAX_MEGABYTES = 25.0
PRETRAINED_DIR = pathlib.Path(__file__).parent.parent / 'pretrained'
PARAMS_FILE = 'model.msgpack'
INFO_FILE = 'model.json'


def save(workdir: str, out: str | pathlib.Path, step: int | None = None,
           max_megabytes: float = MAX_MEGABYTES) -> dict[str, Any]:
  """Writes the pretrained-model files for `workdir`'s best checkpoint (or `step`)."""
  config, variables, step = workdirs.restore_variables(workdir, step)
  variables = jax.tree.map(lambda x: np.asarray(x, np.float16), variables)
  blob = flax.serialization.msgpack_serialize(variables)
  megabytes = len(blob) / 2**20
  if megabytes > max_megabytes:
    raise UserError(f'{config.model.name} is {megabytes:.1f} MB in float16, over the '
                    f'{max_megabytes:g} MB the package may carry; export a smaller model')
  metrics = workdirs.manager(workdir, config, read_only=True).metrics(step) or {}
  info = {
      'model': config.model.to_dict(),
      'step': step,
      'eval_split': config.data.eval_split,
      'eval_accuracy_float32': metrics.get('accuracy'),
      'parameters': models.count_parameters(variables['params']),
      'dtype': 'float16',
      'megabytes': round(megabytes, 2),
      'config': json.loads(config.to_json_best_effort()),
  }
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / PARAMS_FILE).write_bytes(blob)
  (out / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + '\n')
  return info


def resolve(model: str) -> pathlib.Path:
  """The folder of `model`: "pretrained" is the one shipped in the package."""
  return PRETRAINED_DIR if model == 'pretrained' else pathlib.Path(model)


def load(directory: str | pathlib.Path = PRETRAINED_DIR
         ) -> tuple[ml_collections.ConfigDict, dict[str, Any], dict[str, Any]]:
  """(training config, float32 variables, info) of an exported model."""
  directory = pathlib.Path(directory)
  info_path, params_path = directory / INFO_FILE, directory / PARAMS_FILE
  if not info_path.exists() or not params_path.exists():
    if directory == PRETRAINED_DIR:
      raise UserError(f'the shipped model is missing from {directory}; reinstall fer_flax')
    missing = ' and '.join(p.name for p in (info_path, params_path) if not p.exists())
    raise UserError(f'{directory} holds no model ({missing} missing): pass --model=pretrained, or '
                    'a folder written by python -m fer_flax.export --workdir=RUN --out=FOLDER')
  info = json.loads(info_path.read_text())
  variables = flax.serialization.msgpack_restore(params_path.read_bytes())
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  return ml_collections.ConfigDict(info['config']), variables, info
