"""The package's own model format: size limit, a missing model, float16 against the checkpoint."""

import json

import numpy as np
import pytest

import fer_flax
from fer_flax.core.errors import UserError
from fer_flax.serve import package
from tests import helpers


def test_export_refuses_a_model_over_the_size_limit(finished_run, tmp_path):
  with pytest.raises(UserError, match=r'over the 0.001 MB the package may carry'):
    package.save(str(finished_run[1]), tmp_path, max_megabytes=0.001)


def test_missing_pretrained_model(tmp_path, monkeypatch):
  with pytest.raises(UserError, match=f'{tmp_path} holds no model .*python -m fer_flax.export'):
    fer_flax.Predictor.pretrained(tmp_path)
  monkeypatch.setattr(package, 'PRETRAINED_DIR', tmp_path)  # a package installed without it
  with pytest.raises(UserError, match='the shipped model is missing .*; reinstall fer_flax'):
    package.load(tmp_path)


def test_exported_float16_model_agrees_with_its_checkpoint(finished_run, packed_run):
  from_checkpoint = fer_flax.Predictor.from_workdir(str(finished_run[1]), detect=False)
  shipped = fer_flax.Predictor.pretrained(packed_run, detect=False)
  faces = [helpers.face(label, np.random.default_rng(label)) for label in range(7)]
  np.testing.assert_allclose(shipped.classify(faces), from_checkpoint.classify(faces), atol=2e-3)
  info = json.loads((packed_run / package.INFO_FILE).read_text())
  assert info['dtype'] == 'float16' and info['model']['name'] == 'seed_cnn'
  assert len((packed_run / package.PARAMS_FILE).read_bytes()) < 0.6 * 4 * info['parameters']
