"""fer_flax: facial-emotion classifiers on FER2013 with JAX and Flax.

`fer_flax.Predictor` classifies the faces in photos (see `fer_flax.serve.predictor`); it is
imported on first use, so `import fer_flax.data.fer2013` stays light. The layers, bottom to top:
`core`, `data`, `models`, `train`, `serve`, then the commands (`fer_flax/*.py`).
"""

from typing import Any

from fer_flax.core import platforms

platforms.skip_absent_tpu()


def __getattr__(name: str) -> Any:
  if name in ('Predictor', 'Face'):
    from fer_flax.serve import predictor  # pylint: disable=g-import-not-at-top
    return getattr(predictor, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
