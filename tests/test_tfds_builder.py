"""The `fer2013` TFDS builder: loadable with tfds.load, prepared once, never mixed up."""

import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_flax.core.errors import UserError
from fer_flax.data import fer2013, tfds_builder
from tests import helpers


def test_tfds_load_gives_the_archive_examples(small_archive, tfds_dir):
  ds = tfds.load('fer2013', split='public_test', data_dir=str(tfds_dir))
  loaded = sorted((int(ex['label']), ex['image'].numpy()[..., 0].tobytes()) for ex in ds)
  source = fer2013.Source(small_archive)
  expected = sorted((r.label, img.tobytes()) for r, img in source.examples('public_test'))
  assert loaded == expected
  builder = tfds.builder('fer2013', data_dir=str(tfds_dir))
  assert builder.info.features['label'].names == list(fer2013.EMOTIONS)
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      'train': 140, 'public_test': 28}


def test_prepare_twice_reuses_and_other_source_is_refused(tmp_path, small_archive, tfds_dir):
  builder = tfds_builder.prepare(small_archive, str(tfds_dir))
  assert builder.is_prepared()
  other = helpers.write_zip(tmp_path / 'other.zip', helpers.make_examples({'Training': 1}, 5))
  with pytest.raises(UserError, match=r'was prepared from .*fer2013.zip, not from .*other.zip; '
                                      r'pass --config.data.tfds_data_dir'):
    tfds_builder.prepare(other, str(tfds_dir))


def test_manual_dir_holding_the_archive(tmp_path, small_archive):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'fer2013.zip').write_bytes(small_archive.read_bytes())
  builder = tfds.builder('fer2013', data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  images = [ex['image'] for ex in tfds.as_numpy(builder.as_dataset(split='train'))]
  assert len(images) == 140 and images[0].shape == (48, 48, 1) and images[0].dtype == np.uint8


def test_corrupt_image_stops_preparation_naming_the_file(tmp_path):
  path = helpers.write_zip(tmp_path / 'a.zip', helpers.make_examples({'Training': 1}))
  with zipfile.ZipFile(path, 'a') as z:
    z.writestr('train/fear/Training_broken.jpg', b'\xff\xd8 not really a jpeg')
  with pytest.raises(UserError, match=r'train/fear/Training_broken.jpg: not a readable image'):
    tfds_builder.prepare(path, str(tmp_path / 'tfds'))


@pytest.mark.parametrize('form', ['zip', 'folder', 'csv'])
def test_every_form_prepares_the_same_splits(tmp_path, form):
  examples = helpers.make_examples({'Training': 2, 'PublicTest': 1, 'PrivateTest': 1}, seed=3)
  path = {'zip': lambda: helpers.write_zip(tmp_path / 'a.zip', examples),
          'folder': lambda: helpers.write_folder(tmp_path / 'unzipped', examples),
          'csv': lambda: helpers.write_csv(tmp_path / 'fer2013.csv', examples)}[form]()
  builder = tfds_builder.prepare(path, str(tmp_path / 'tfds'))
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      'train': 14, 'public_test': 7, 'private_test': 7}
  private = sorted((int(ex['label']), ex['image'][..., 0].tobytes())
                   for ex in tfds.as_numpy(builder.as_dataset(split='private_test')))
  assert private == sorted((label, image.tobytes()) for usage, label, image in examples
                           if usage == 'PrivateTest')
