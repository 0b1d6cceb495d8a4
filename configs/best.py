"""The accelerator recipe aimed past the published single networks (about 73-74% public_test).

The shared recipe (`recipe.py`) on the FER2013 literature's VGG in bfloat16, for 150 epochs on a
warm-up plus cosine schedule, with random crops and stronger erasing. Evaluate with --tta=tencrop,
and ensemble several seeds with --workdir=A,B,C.

  python -m fer_flax.main --config=configs/best.py --workdir=DIR --config.data.path=fer2013.zip \
      [--config.seed=1]
On a CPU, add --config.model.dtype=float32: XLA:CPU emulates bfloat16 slowly.
"""

import ml_collections

from configs import recipe


def get_config() -> ml_collections.ConfigDict:
  config = recipe.get_config()
  config.model.dtype = 'bfloat16'
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_epochs = 5.0

  config.augment.crop_padding = 4
  config.augment.scale = 0.15
  config.augment.shift = 0.05
  config.augment.erase_probability = 0.5

  config.ema_decay = 0.9995
  config.batch_size = 128
  config.eval_batch_size = 512
  config.num_epochs = 150
  config.steps_per_call = 28  # 224 steps an epoch: 8 compiled calls
  config.log_every_steps = 56
  return config
