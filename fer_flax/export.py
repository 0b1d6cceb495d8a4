"""Packs a trained model: as the package's own model, or for TF Serving, LiteRT and onnxruntime.

  python -m fer_flax.export --workdir=DIR [--step=N] [--out=fer_flax/pretrained]
  python -m fer_flax.export (--workdir=DIR [--step=N] | --model=pretrained|DIR)
      --format=savedmodel|tflite|onnx --out=DIR [--batch=N]
      [--quantize=float16|dynamic | --quantize=int8 --data=PATH/TO/fer2013.zip]

The default format, `msgpack`, writes `model.msgpack` (the model variables in float16, half the
size) and `model.json` (the model config and where it came from), which
`fer_flax.Predictor.pretrained()` and `python -m fer_flax.predict --model=pretrained` load. The
other formats (`fer_flax.serve.exported`) run without JAX.
"""


from absl import app, flags

from fer_flax.core import cli
from fer_flax.core.errors import exits_on_user_error
from fer_flax.serve import exported, loading, package  # exported loads TensorFlow to export

FLAGS = flags.FLAGS


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  loading.check_source(FLAGS.model, FLAGS.workdir, FLAGS.step)
  if FLAGS.format != 'msgpack':
    if FLAGS.out == str(package.PRETRAINED_DIR):
      raise app.UsageError(f'--format={FLAGS.format} writes outside the package: give --out=DIR')
    loaded = loading.load_model(FLAGS.model, FLAGS.workdir, FLAGS.step)
    path = exported.export_model(loaded.config, loaded.variables, FLAGS.format, FLAGS.out,
                                 FLAGS.quantize, FLAGS.data, FLAGS.batch)
    print(f'exported {loaded.config.model.name} as {FLAGS.format} ({FLAGS.quantize}) to {path}')
    return
  if FLAGS.workdir is None:
    raise app.UsageError('--format=msgpack packs a training run: give --workdir')
  info = package.save(FLAGS.workdir, FLAGS.out, FLAGS.step)
  print(f'exported {info["model"]["name"]} step {info["step"]} ({info["parameters"]:,} parameters, '
        f'{info["megabytes"]} MB, {info["eval_split"]} accuracy {info["eval_accuracy_float32"]}) '
        f'to {FLAGS.out}')


def _define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training run to export.')
  flags.DEFINE_string('model', None, 'Instead of --workdir: "pretrained" or an exported folder '
                      '(for the formats other than msgpack).')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the best.')
  flags.DEFINE_string('out', str(package.PRETRAINED_DIR), 'Where to write the model files.')
  flags.DEFINE_enum('format', 'msgpack', ('msgpack', *exported.FORMATS),
                    'msgpack (the package\'s own), savedmodel (TF Serving), tflite (LiteRT) or '
                    'onnx (onnxruntime).')
  flags.DEFINE_enum('quantize', 'none', exported.QUANTIZATIONS,
                    'tflite only: float16 weights; int8 throughout, calibrated on training faces; '
                    'or dynamic (int8 weights, activations quantized as the model runs).')
  flags.DEFINE_string('data', None, 'FER2013, for --quantize=int8\'s calibration faces.')
  flags.DEFINE_integer('batch', None, 'Fix the number of faces a call takes (default: any).',
                       lower_bound=1)


def run() -> None:
  """`fer-flax-export`, `python -m fer_flax.export`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
