"""A seconds-long run for tests: a narrow seed_cnn on a tiny synthetic dataset."""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model.features = (4, 8)
  config.model.hidden = 16
  config.batch_size = 8
  config.eval_batch_size = 16
  config.num_epochs = 2
  config.log_every_steps = 2
  return config
