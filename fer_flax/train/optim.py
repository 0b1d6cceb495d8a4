"""The optimizer and its learning-rate schedule, from `config.optimizer`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import ml_collections
import optax

from fer_flax.core.errors import UserError
from fer_flax.models import whitening
from fer_flax.train.plan import RunPlan


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`optimizer.learning_rate`, scaled linearly with the batch size (Goyal et al., 2017) when
  `optimizer.reference_batch_size` is set, so one config serves a laptop's batch and an
  accelerator's."""
  opt = config.optimizer
  if opt.reference_batch_size:
    return opt.learning_rate * config.batch_size / opt.reference_batch_size
  return opt.learning_rate


def create_learning_rate_schedule(config: ml_collections.ConfigDict,
                                  plan: RunPlan) -> optax.Schedule:
  """Linear warm-up (`plan.warmup_steps`) then constant or cosine decay to zero, or one-cycle.

  One-cycle (Smith & Topin, 2019) warms up by cosine over the warm-up epochs from
  peak / onecycle_div_factor, then anneals to
  peak / onecycle_div_factor / onecycle_final_div_factor. The peak: `peak_learning_rate`.
  """
  opt = config.optimizer
  peak = peak_learning_rate(config)
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
  """Weight decay applies to learned kernels only: never to biases, normalisation scales or the
  frozen whitening kernel."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1 and not whitening.is_frozen(path), params)


class LookaheadState(NamedTuple):
  """`optax.lookahead`'s state, and the slow weights it would otherwise keep in the parameters."""
  lookahead: optax.LookaheadState
  slow: Any


def lookahead(fast: optax.GradientTransformation, sync_period: int,
              slow_step_size: float) -> optax.GradientTransformation:
  """`optax.lookahead` (Zhang et al., 2019) on plain parameters: the slow weights live in the
  optimizer state, so the train state, checkpoints and evaluation keep the parameters' shape.

  Every `sync_period` steps the slow weights move `slow_step_size` of the way to the fast ones and
  the fast ones restart from there. Equality with `optax.lookahead`: tests/test_optim.py::
  test_lookahead_on_plain_parameters_is_optax_lookahead.
  """
  inner = optax.lookahead(fast, sync_period, slow_step_size)

  def init(params):
    return LookaheadState(inner.init(optax.LookaheadParams.init_synced(params)),
                          jax.tree.map(jax.numpy.copy, params))

  def update(grads, state, params):
    updates, inner_state = inner.update(grads, state.lookahead,
                                        optax.LookaheadParams(fast=params, slow=state.slow))
    return updates.fast, LookaheadState(inner_state,
                                        optax.apply_updates(state.slow, updates.slow))

  return optax.GradientTransformation(init, update)


def is_convolution_kernel(path: tuple[Any, ...], param: jax.Array) -> bool:
  """Whether the parameter at `path` is a learned convolution kernel (4-D; not the frozen
  whitening one)."""
  return param.ndim == 4 and not whitening.is_frozen(path)


def muon_for_convolutions(rest: optax.GradientTransformation, config: ml_collections.ConfigDict,
                          schedule: optax.Schedule) -> optax.GradientTransformation:
  """Muon (Jordan et al., 2024; `optax.contrib.scale_by_muon`) for the convolution kernels, `rest`
  for every other parameter.

  Each kernel's Nesterov momentum (`muon_momentum`) is orthogonalized by `muon_ns_steps`
  Newton-Schulz iterations over its (height x width x input, output) matrix, then scaled by the
  run's schedule in proportion, so its peak is `muon_learning_rate` at any batch size (Newton-Schulz
  sets a step's size, whatever the batch). No weight decay: batch norm follows every kernel, so a
  kernel's scale only sets its effective rate.
  """
  opt = config.optimizer
  ratio = opt.muon_learning_rate / peak_learning_rate(config)
  hwio = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
  muon = optax.chain(
      optax.contrib.scale_by_muon(
          beta=opt.muon_momentum, nesterov=True, ns_steps=opt.muon_ns_steps,
          weight_dimension_numbers=lambda kernels: jax.tree.map(lambda _: hwio, kernels)),
      optax.scale_by_learning_rate(lambda step: schedule(step) * ratio))

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, p: 'muon' if is_convolution_kernel(path, p) else 'rest', params)

  return optax.multi_transform({'muon': muon, 'rest': rest}, labels)


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optax optimizer named in `config.optimizer`, with Muon for the convolution kernels when
  `optimizer.muon_learning_rate` is set, inside Lookahead when `optimizer.lookahead_steps` is."""
  opt = config.optimizer
  tx = _create_optimizer(opt, schedule)
  if opt.get('muon_learning_rate'):
    tx = muon_for_convolutions(tx, config, schedule)
  if opt.get('lookahead_steps'):
    return lookahead(tx, opt.lookahead_steps, opt.lookahead_step_size)
  return tx


def _create_optimizer(opt: ml_collections.ConfigDict,
                      schedule: optax.Schedule) -> optax.GradientTransformation:
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
