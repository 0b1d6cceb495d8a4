"""The classifiers (`architectures`) and the layers XLA:CPU differentiates faster (`layers`).

  python -m fer_flax.models      # parameters and FLOPs per image of every model
"""
# Three short lines read better than the vertical list the import sorter would make of them.
# ruff: noqa: I001

from fer_flax.models.architectures import MODELS, VGG, CompactCNN, ResidualBlock, ResNet, SeedCNN
from fer_flax.models.architectures import SeparableBlock, count_parameters, create_model, describe
from fer_flax.models.architectures import flatten_grid, preprocess

__all__ = ['MODELS', 'VGG', 'CompactCNN', 'ResNet', 'ResidualBlock', 'SeedCNN', 'SeparableBlock',
           'count_parameters', 'create_model', 'describe', 'flatten_grid', 'preprocess']
