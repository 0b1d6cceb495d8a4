"""Prints the parameters and forward FLOPs per image of every model: python -m fer_flax.models"""

import ml_collections

from fer_flax.models import MODELS, create_model, describe


def run() -> None:
  """`fer-flax-models`, `python -m fer_flax.models`."""
  print(f'{"model":10s} {"parameters":>12s} {"MFLOPs/image":>13s}')
  for model_name in MODELS:
    count, flops = describe(create_model(ml_collections.ConfigDict({'name': model_name})))
    print(f'{model_name:10s} {count:12,d} {flops / 1e6:13.1f}')


if __name__ == '__main__':
  run()
