"""Runs a fer_flax tool as if TensorFlow, TFDS and TensorBoard were not installed.

  python -m tests.without_tensorflow fer_flax.evaluate --workdir=...

`import tensorflow` then fails as it does where TensorFlow is missing, and
`importlib.util.find_spec('tensorflow')` returns None, as libraries probe for it. The last line
printed lists the TensorFlow modules that loaded all the same (none, if the tool works without).
"""

import runpy
import sys

_BLOCKED = ('tensorflow', 'tensorflow_datasets', 'tensorboard')


def main() -> None:
  for name in _BLOCKED:
    sys.modules[name] = None
  module = sys.argv[1]
  sys.argv = [module] + sys.argv[2:]
  try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
  finally:
    loaded = [m for m in sys.modules if m.startswith(_BLOCKED) and sys.modules[m] is not None]
    print('LOADED', loaded, flush=True)


if __name__ == '__main__':
  main()
