"""Time to accuracy on one accelerator: `best.py`, tuned to reach 72% public_test fast.

After the fastest small-image trainers (airbench on CIFAR-10): the whole data set held on the
device, bfloat16 compute with batch-norm statistics in float32, a large batch on a short one-cycle
schedule, label smoothing, a moving average of the weights, and flip-and-shift test-time
augmentation (`evaluate --tta=tencrop`). One compiled call per epoch (a `lax.scan` of its steps),
no host work in between. Wall time to accuracy per evaluation: `python -m fer_flax.timing`.

  python -m fer_flax.main --config=configs/fast.py --workdir=DIR --config.data.path=fer2013.zip

On a CPU it trains too, slowly; add --config.model.dtype=float32 there (XLA:CPU emulates bfloat16).
"""

import ml_collections

from configs import best


def get_config() -> ml_collections.ConfigDict:
  """`best.py`'s model, recipe and augmentation, on a large batch and a short one-cycle schedule."""
  config = best.get_config()
  config.optimizer.reference_batch_size = 128  # best.py's 0.05 at batch 128: 0.2 at batch 512
  config.optimizer.schedule = 'onecycle'
  config.optimizer.warmup_epochs = 6.0

  config.ema_decay = 0.995  # about 200 steps, 3.5 epochs of batch 512
  config.batch_size = 512
  config.eval_batch_size = 1024
  config.num_epochs = 30
  config.steps_per_call = 56  # one call per epoch: 28,709 // 512 steps
  config.log_every_steps = 56
  return config
