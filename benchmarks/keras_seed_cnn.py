"""The peer of `python -m fer_flax.benchmark`: the same seed_cnn and batches, trained by Keras 3.

  KERAS_BACKEND=tensorflow python benchmarks/keras_seed_cnn.py --data=BATCHES.npz [--json=FILE]

The network is the original project's, layer for layer: Conv 64 -> MaxPool -> Conv 128 -> MaxPool
-> Dense 512 -> Dropout 0.5 -> Dense 7, Adam 1e-3 (eps 1e-7), on uint8 images scaled to [0, 1].
`--data` holds `images` [steps, batch, 48, 48, 1] uint8 and `labels` [steps, batch] int32; Keras
trains on them in order with `fit`, its fastest path. Throughput counts the batches after the
first `--warmup` ones (compilation and start-up): from the end of batch `--warmup` to `fit`'s
return.
Keras is an optional extra (`pip install -e '.[bench]'`), not a dependency of fer_flax.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top


def build(keras):
  """seed_cnn in Keras: 9,515,783 parameters, as fer_flax's `seed_cnn`."""
  layers = keras.layers
  return keras.Sequential([
      keras.Input((48, 48, 1)),
      layers.Rescaling(1.0 / 255),
      layers.Conv2D(64, 3, padding='same', activation='relu'),
      layers.MaxPooling2D(2),
      layers.Conv2D(128, 3, padding='same', activation='relu'),
      layers.MaxPooling2D(2),
      layers.Flatten(),
      layers.Dense(512, activation='relu'),
      layers.Dropout(0.5),
      layers.Dense(7),
  ])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', required=True, help='.npz of images and labels, as above')
  parser.add_argument('--warmup', type=int, default=5, help='batches left out of the timing')
  parser.add_argument('--json', help='also write the result here')
  args = parser.parse_args()
  try:
    import keras  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit("keras_seed_cnn: error: Keras is not installed; pip install -e '.[bench]'")

  with np.load(args.data) as data:
    images, labels = data['images'], data['labels']
  steps, batch_size = labels.shape
  if steps <= args.warmup:
    sys.exit(f'keras_seed_cnn: error: {args.data} has {steps} batches; it needs more than '
             f'--warmup={args.warmup}')
  keras.utils.set_random_seed(0)
  model = build(keras)
  model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-7),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

  ends = []

  class Clock(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      ends.append(time.perf_counter())

  start = time.perf_counter()
  history = model.fit(images.reshape(-1, 48, 48, 1), labels.reshape(-1), batch_size=batch_size,
                      epochs=1, shuffle=False, verbose=0, callbacks=[Clock()])
  end = time.perf_counter()  # `fit` has returned: every step has finished.
  timed = steps - args.warmup
  result = {
      'backend': keras.backend.backend(),
      'keras': keras.__version__,
      'parameters': model.count_params(),
      'batch_size': int(batch_size),
      'timed_steps': timed,
      'images_per_sec': timed * batch_size / (end - ends[args.warmup - 1]),
      'first_steps_seconds': ends[args.warmup - 1] - start,
      'loss': float(history.history['loss'][-1]),
  }
  print(json.dumps(result))
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  main()
