"""The best model this project trains in under an hour on a 2-core CPU with no accelerator.

A narrow VGG with batch norm that spends its convolutions at 24x24 and below, where XLA:CPU is
fastest, trained by SGD with Nesterov momentum on a one-cycle schedule, with light geometric
augmentation, random erasing, label smoothing, and a moving average of the weights for evaluation.
The split stays in memory (no tf.data workers competing for the 2 cores), 10 steps per call.
Sized to the budget: 30 epochs at about 270 images/s (about 57 minutes).

  python -m fer_flax.main --config=configs/cpu.py --workdir=DIR --config.data.path=fer2013.zip
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model = ml_collections.ConfigDict({
      'name': 'vgg',
      'stages': ((32,), (64, 64), (128, 128), (256, 256)),
      'hidden': (256,),
      'dropout_rate': 0.3,
      'dtype': 'float32',
  })
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = 'onecycle'
  config.optimizer.warmup_epochs = 7.5

  config.augment.flip = True
  config.augment.rotation = 10.0
  config.augment.scale = 0.1
  config.augment.shift = 0.1
  config.augment.erase_probability = 0.25

  config.label_smoothing = 0.1
  config.ema_decay = 0.998
  config.batch_size = 64
  config.num_epochs = 30
  config.data.pipeline = 'memory'
  config.steps_per_call = 10
  return config
