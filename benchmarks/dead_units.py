"""How many of a model's hidden dense units never fire: the ReLUs a high learning rate killed.

  python benchmarks/dead_units.py (--model=pretrained | --workdir=DIR [--step=N])
      [--data=../shared/data/fer2013/fer2013.zip] [--faces=512]

Runs the model (its evaluation weights) on the first `--faces` faces of `public_test` and prints,
for each hidden dense layer, the share of its units whose ReLU is zero on every one of them, and
the share of unit-face pairs that fire. A dead unit passes no gradient, so it stays dead: a head
that lost most of its units predicts the class prior (docs/screen.md).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fer_flax import models  # pylint: disable=g-import-not-at-top
from fer_flax.data import fer2013  # pylint: disable=g-import-not-at-top
from fer_flax.serve import loading  # pylint: disable=g-import-not-at-top


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model')
  parser.add_argument('--workdir')
  parser.add_argument('--step', type=int)
  parser.add_argument('--data', default=str(pathlib.Path(__file__).resolve().parents[2]
                                            / 'shared/data/fer2013/fer2013.zip'))
  parser.add_argument('--faces', type=int, default=512)
  args = parser.parse_args()
  loaded = loading.load_model(args.model, args.workdir, args.step)
  images, _ = fer2013.load_split(fer2013.Source(args.data), 'public_test')
  model = models.create_model(loaded.config.model)
  _, state = model.apply(
      loaded.variables, models.preprocess(jnp.asarray(images[:args.faces])), train=False,
      mutable=['intermediates'],
      capture_intermediates=lambda m, _: (m.name or '').startswith(('Dense_', 'DenseNorm_')))
  outputs = {k: np.asarray(v['__call__'][0]) for k, v in state['intermediates'].items()}
  print(f'{loaded.source} (step {loaded.step}), {args.faces} public_test faces:')
  for i in range(len(loaded.config.model.get('hidden', ()))):
    # What goes into the ReLU: the hidden dense layer's output, or its batch norm's.
    name = f'DenseNorm_{i}' if f'DenseNorm_{i}' in outputs else f'Dense_{i}'
    fires = outputs[name] > 0
    print(f'  {name}: {(~fires.any(0)).mean():.1%} of {fires.shape[1]} units never fire; '
          f'{fires.mean():.1%} of unit-face pairs fire')


if __name__ == '__main__':
  main()
