"""The accelerator recipe aimed past the published single networks (about 73-74% public_test).

The batch-norm VGG of the FER2013 literature, trained for 150 epochs by SGD with Nesterov momentum
on a warm-up plus cosine schedule, with random crops, flips, rotation, zoom, shifts and random
erasing, label smoothing, a moving average of the weights for evaluation, and bfloat16 compute on
float32 parameters. Evaluate with --tta=tencrop, and ensemble several seeds with --workdir=A,B,C.

  python -m fer_flax.main --config=configs/best.py --workdir=DIR --config.data.path=fer2013.zip \
      [--config.seed=1]
On a CPU, add --config.model.dtype=float32: XLA:CPU emulates bfloat16 slowly.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model = ml_collections.ConfigDict({
      'name': 'vgg',
      'stages': ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512)),
      'hidden': (1024, 1024),
      'dropout_rate': 0.3,
      'dtype': 'bfloat16',
  })
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_epochs = 5.0

  config.augment.flip = True
  config.augment.crop_padding = 4
  config.augment.rotation = 10.0
  config.augment.scale = 0.15
  config.augment.shift = 0.05
  config.augment.erase_probability = 0.5

  config.label_smoothing = 0.1
  config.ema_decay = 0.9995
  config.batch_size = 128
  config.eval_batch_size = 512
  config.num_epochs = 150
  config.log_every_steps = 50
  return config
