"""The best model this project trains in under an hour on a 2-core CPU with no accelerator.

The shared recipe (`recipe.py`) on a narrow VGG that spends its convolutions at 24x24 and below,
where XLA:CPU is fastest, on a one-cycle schedule, in batches of 32 (more updates an epoch, and
faster on two cores than 64). The split stays in memory (no tf.data workers competing for the
cores), 10 steps per call. Sized by the clock: as many epochs as fit in the hour at the speed its
first steps measure (`fer_flax/train/budget.py`), the warm-up a quarter of them;
`--config.time_budget_minutes=0` trains `num_epochs`. The runs behind each choice: docs/results.md.

  python -m fer_flax.main --config=configs/cpu.py --workdir=DIR --config.data.path=fer2013.zip
"""

import ml_collections

from configs import recipe


def get_config() -> ml_collections.ConfigDict:
  config = recipe.get_config()
  config.model.stages = ((32,), (64, 64), (128, 128), (256, 256))
  config.model.hidden = (512,)  # a little more accuracy than 256 for a little speed
  config.optimizer.schedule = 'onecycle'
  config.optimizer.warmup_epochs = 7.5

  config.ema_decay = 0.999  # about 1,000 steps: a little over an epoch
  config.batch_size = 32
  config.time_budget_minutes = 60.0
  config.num_epochs = 30  # with the budget, only the warm-up's share: 7.5 / 30
  config.steps_per_call = 10
  return config
