"""The optimizer and its learning-rate schedule, from `config.optimizer`."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

from fer_flax.core.errors import UserError
from fer_flax.train.plan import RunPlan


def create_learning_rate_schedule(config: ml_collections.ConfigDict,
                                  plan: RunPlan) -> optax.Schedule:
  """Linear warm-up (`plan.warmup_steps`) then constant or cosine decay to zero, or one-cycle.

  One-cycle (Smith & Topin, 2019) warms up by cosine over the warm-up epochs from
  peak / onecycle_div_factor, then anneals to
  peak / onecycle_div_factor / onecycle_final_div_factor.
  With `optimizer.reference_batch_size`, the peak scales linearly with the batch size (Goyal et
  al., 2017), so one config serves a laptop's batch and an accelerator's.
  """
  opt = config.optimizer
  peak = opt.learning_rate
  if opt.reference_batch_size:
    peak *= config.batch_size / opt.reference_batch_size
  warmup_steps, total_steps = plan.warmup_steps, plan.total_steps
  if opt.schedule == 'onecycle':  # optax's cosine_onecycle_schedule, with whole-step boundaries
    # (its fraction can round the warm-up's end a step early, which a re-sized run would notice).
    return optax.piecewise_interpolate_schedule(
        'cosine', peak / opt.onecycle_div_factor,
        {warmup_steps: opt.onecycle_div_factor,
         total_steps: 1 / (opt.onecycle_div_factor * opt.onecycle_final_div_factor)})
  if opt.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif opt.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
  else:
    raise UserError(f'unknown schedule {opt.schedule!r} in config.optimizer.schedule; '
                    'choose constant, cosine or onecycle')
  if not warmup_steps:
    return main
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def decay_mask(params: Any) -> Any:
  """Weight decay applies to kernels only, never to biases or normalisation scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optax optimizer named in `config.optimizer`."""
  opt = config.optimizer
  parts = []
  if opt.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'adamw':
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
  if opt.weight_decay:  # Coupled (L2) decay, as SGD and Adam apply it.
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask))
  if opt.name == 'adam':
    parts.append(optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
  elif opt.name == 'sgd':
    parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  else:
    raise UserError(f'unknown optimizer {opt.name!r} in config.optimizer.name; '
                    'choose adam, adamw or sgd')
  return optax.chain(*parts)
