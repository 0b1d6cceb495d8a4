"""fer_flax: facial-emotion classifiers on FER2013 with JAX and Flax.

`fer_flax.Predictor` classifies the faces in photos (see `fer_flax.predict`); it is imported on
first use, so `import fer_flax.fer2013` stays light.
"""

from typing import Any

from fer_flax import platforms

platforms.skip_absent_tpu()


def __getattr__(name: str) -> Any:
  if name in ('Predictor', 'Face'):
    from fer_flax import predict  # pylint: disable=g-import-not-at-top
    return getattr(predict, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
