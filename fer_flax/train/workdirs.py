"""A run's workdir: its saved config and its Orbax checkpoints. Every Orbax call is here.

No TensorFlow. Paths go through `etils.epath`, so a workdir may be local or on gs://.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from fer_flax.core.errors import UserError
from fer_flax.models import architectures

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
# Fields that may differ when a run resumes: where the same data lives, not what it is, and how
# the steps are compiled, fed and spread over processes, which changes no result beyond float
# rounding.
_RELOCATABLE_FIELDS = ('data.path', 'data.tfds_data_dir', 'data.prefetch', 'steps_per_call',
                       'cpu_compiler_options.', 'distributed.')
# Fields a resumed run sized by its time budget takes from its plan, not its config (runs from
# before plan.json saved the sized values in config.json).
_SIZED_BY_BUDGET = ('num_epochs', 'optimizer.warmup_epochs')


def _flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _model_defaults(saved: dict[str, Any]) -> dict[str, Any]:
  """The flattened `model.` fields of the saved config's architecture at their defaults, as a
  saved config.json holds them (tuples as lists)."""
  if saved.get('model.name') not in architectures.MODELS:
    return {}
  defaults = architectures.field_defaults(saved['model.name'])
  return {f'model.{k}': json.loads(json.dumps(v, default=str)) for k, v in defaults.items()}


def workdir_path(workdir: epath.PathLike) -> epath.Path:
  """A workdir as a path of any file system epath knows (gs:// too); local ones made absolute."""
  path = epath.Path(workdir)
  return path if '://' in str(workdir) else path.absolute()


def check_or_save_config(config: ml_collections.ConfigDict, workdir: epath.PathLike,
                         resuming: bool) -> None:
  """Saves the run's config in the workdir, or refuses to resume a run made with another one.

  Without checkpoints there is nothing to protect: a run that failed at start-up (a typo in a
  field, say) is simply started again with the corrected config. The config is what the user
  asked for; what the run derives from it is its plan (`plan.RunPlan`, in plan.json).
  """
  path = epath.Path(workdir) / CONFIG_FILE
  current = json.loads(config.to_json_best_effort())
  if resuming and path.exists():
    saved = _flatten(json.loads(path.read_text()))
    now = _flatten(current)
    ignored = _RELOCATABLE_FIELDS + (_SIZED_BY_BUDGET if config.time_budget_minutes else ())
    # A field the saved config lacks was added to fer_flax after that run was made. A model's
    # field is compared with its architecture's default, which that run was built with; any
    # other is skipped (its base.py default keeps the behaviour the run had).
    saved = {**_model_defaults(saved), **saved}
    changed = sorted(k for k in saved.keys() & now.keys()
                     if not k.startswith(ignored) and saved[k] != now[k])
    if changed:
      diffs = ', '.join(f'{k}: {saved.get(k)!r} -> {now.get(k)!r}' for k in changed[:3])
      raise UserError(f'{workdir} holds a run with a different config ({diffs}); use a new '
                      '--workdir, or repeat the overrides that run used (see its config.json)')
    return
  if jax.process_index() == 0:
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + '\n')


def load_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise UserError(f'{path} does not exist; pass the --workdir of a training run')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def manager(workdir: epath.PathLike, config: ml_collections.ConfigDict,
            read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest `config.keep_checkpoints` plus the best by eval accuracy.

  A save cut short by a crash leaves a `STEP.orbax-checkpoint-tmp` folder; orbax ignores it and
  replaces it when the resumed run saves that step again.
  """
  best = ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m['accuracy'], n=1,
                                       keep_checkpoints_without_metrics=False)
  options = ocp.CheckpointManagerOptions(
      best_fn=lambda m: m['accuracy'], best_mode='max', read_only=read_only,
      create=not read_only, save_interval_steps=0 if read_only else 1,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
          [ocp.checkpoint_managers.LatestN(config.keep_checkpoints), best]))
  # Both handlers read and write the same format; only the PyTree one can leave parts unread.
  handler = ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler()
  return ocp.CheckpointManager(workdir_path(workdir) / CHECKPOINT_DIR, options=options,
                               item_handlers=handler)


class Checkpoints:
  """A training run's checkpoints: what the training loop saves, restores and reports."""

  def __init__(self, workdir: epath.PathLike, config: ml_collections.ConfigDict):
    self._manager = manager(workdir, config)

  def latest_step(self) -> int:
    """The step of the newest checkpoint; 0 when there is none."""
    return self._manager.latest_step() or 0

  def restore(self, state: Any, step: int) -> Any:
    """Restores `step` into the structure, dtypes and shardings of `state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Saves `state` (in the background); `metrics['accuracy']` ranks it for keeping the best."""
    self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

  def best(self) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) of the checkpoint with the best eval accuracy, if one was evaluated."""
    step = self._manager.best_step()
    metrics = self._manager.metrics(step) if step is not None else None
    return (step, metrics) if metrics else None

  def wait(self) -> None:
    """Waits for the saves in flight to finish."""
    self._manager.wait_until_finished()


def restore_variables(workdir: epath.PathLike, step: int | None = None
                      ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """(config, evaluation variables, step) of a run's best checkpoint, or of `step`; no optimizer.

  The evaluation variables are the moving average of the weights when the run kept one.
  """
  config = load_config(workdir)
  mngr = manager(workdir, config, read_only=True)
  step = mngr.best_step() if step is None else step
  if step is None or step not in mngr.all_steps():
    raise UserError(f'no checkpoint {"" if step is None else f"at step {step} "}in '
                    f'{epath.Path(workdir) / CHECKPOINT_DIR} (it has steps '
                    f'{list(mngr.all_steps())}); pass one of those with --step')
  metadata = mngr.item_metadata(step)
  # The moving average, when the run kept one, is what it evaluated and chose by. Only those
  # weights are read; the optimizer state (as large as the weights, or twice) stays on disk.
  part = 'ema' if metadata.get('ema') else None
  weights = metadata[part] if part else metadata
  # Onto this process's first device, whatever devices and processes saved it (a TPU slice, say).
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local),
                          {'params': weights['params'],
                           'batch_stats': weights.get('batch_stats') or {}})
  item = {part: abstract} if part else abstract
  restored = mngr.restore(step, args=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True))
  return config, restored[part] if part else restored, step
