"""Packs a trained model: as the package's own model, or for TF Serving, LiteRT and onnxruntime.

  python -m fer_flax.export --workdir=DIR [--step=N] [--out=fer_flax/pretrained]
  python -m fer_flax.export (--workdir=DIR [--step=N] | --model=pretrained|DIR)
      --format=savedmodel|tflite|onnx --out=DIR [--batch=N]
      [--quantize=float16|dynamic | --quantize=int8 --data=PATH/TO/fer2013.zip]

The default format, `msgpack`, writes `model.msgpack` (the model variables in float16, half the
size) and `model.json` (the model config and where it came from), which
`fer_flax.Predictor.pretrained()` and `python -m fer_flax.predict --model=pretrained` load. The
other formats (`fer_flax.deploy`) run without JAX.
"""

import json
import pathlib
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np
from absl import app, flags

from fer_flax import deploy, workdirs  # deploy loads TensorFlow only when it exports
from fer_flax.errors import UserError, exits_on_user_error

MAX_MEGABYTES = 25.0
PRETRAINED_DIR = pathlib.Path(__file__).parent / 'pretrained'
PARAMS_FILE = 'model.msgpack'
INFO_FILE = 'model.json'


def export(workdir: str, out: str | pathlib.Path, step: int | None = None,
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
      'parameters': int(sum(x.size for x in jax.tree.leaves(variables['params']))),
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
    raise UserError(f'no pretrained model in {directory}; reinstall fer_flax, or export one with '
                    'python -m fer_flax.export --workdir=DIR')
  info = json.loads(info_path.read_text())
  variables = flax.serialization.msgpack_restore(params_path.read_bytes())
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  return ml_collections.ConfigDict(info['config']), variables, info


FLAGS = flags.FLAGS


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if (FLAGS.workdir is None) == (FLAGS.model is None):
    raise app.UsageError('give exactly one of --workdir (a training run) and --model')
  if FLAGS.format != 'msgpack':
    if FLAGS.out == str(PRETRAINED_DIR):
      raise app.UsageError(f'--format={FLAGS.format} writes outside the package: give --out=DIR')
    if FLAGS.workdir:
      config, variables, _ = workdirs.restore_variables(FLAGS.workdir, FLAGS.step)
    else:
      config, variables, _ = load(resolve(FLAGS.model))
    path = deploy.export_model(config, variables, FLAGS.format, FLAGS.out, FLAGS.quantize,
                               FLAGS.data, FLAGS.batch)
    print(f'exported {config.model.name} as {FLAGS.format} ({FLAGS.quantize}) to {path}')
    return
  if FLAGS.workdir is None:
    raise app.UsageError('--format=msgpack packs a training run: give --workdir')
  info = export(FLAGS.workdir, FLAGS.out, FLAGS.step)
  print(f'exported {info["model"]["name"]} step {info["step"]} ({info["parameters"]:,} parameters, '
        f'{info["megabytes"]} MB, {info["eval_split"]} accuracy {info["eval_accuracy_float32"]}) '
        f'to {FLAGS.out}')


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training run to export.')
  flags.DEFINE_string('model', None, 'Instead of --workdir: "pretrained" or an exported folder '
                      '(for the formats other than msgpack).')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the best.')
  flags.DEFINE_string('out', str(PRETRAINED_DIR), 'Where to write the model files.')
  flags.DEFINE_enum('format', 'msgpack', ('msgpack', *deploy.FORMATS),
                    'msgpack (the package\'s own), savedmodel (TF Serving), tflite (LiteRT) or '
                    'onnx (onnxruntime).')
  flags.DEFINE_enum('quantize', 'none', deploy.QUANTIZATIONS,
                    'tflite only: float16 weights; int8 throughout, calibrated on training faces; '
                    'or dynamic (int8 weights, activations quantized as the model runs).')
  flags.DEFINE_string('data', None, 'FER2013, for --quantize=int8\'s calibration faces.')
  flags.DEFINE_integer('batch', None, 'Fix the number of faces a call takes (default: any).',
                       lower_bound=1)


if __name__ == '__main__':
  # Defined here, not at import, so that other modules and tests can import this one.
  _define_flags()
  app.run(main)
