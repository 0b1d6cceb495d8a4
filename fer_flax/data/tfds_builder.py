"""FER2013 as a TFDS dataset (`fer2013`, manual download).

Importing this module registers the builder, so `tfds.builder('fer2013')` and `tfds.load('fer2013')`
work. `prepare()` is what training calls: it prepares the dataset once into the TFDS data dir and
refuses to mix it up with a different source later.
"""

from __future__ import annotations

import json
import os
import pathlib

import tensorflow_datasets as tfds

from fer_flax.core.errors import UserError
from fer_flax.data import fer2013

_DESCRIPTION = """\
FER2013: 35,887 48x48 grayscale faces labelled with one of seven emotions (0 angry, 1 disgust,
2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral). Splits: train (Training), public_test
(PublicTest, used to choose models), private_test (PrivateTest, the final test split), and test
for a test/ folder whose files carry no FER2013 prefix.
"""

_CITATION = """\
@inproceedings{goodfellow2013challenges,
  title={Challenges in Representation Learning: A report on three machine learning contests},
  author={Goodfellow, Ian J. and Erhan, Dumitru and Carrier, Pierre Luc and Courville, Aaron and
          Mirza, Mehdi and Hamner, Ben and Cukierski, Will and Tang, Yichuan and Thaler, David and
          Lee, Dong-Hyun and others},
  booktitle={ICML Workshop on Challenges in Representation Learning},
  year={2013}
}
"""

_SOURCE_STAMP = 'fer_flax_source.json'


class Fer2013(tfds.core.GeneratorBasedBuilder):
  """FER2013 from the Kaggle archive, its unzipped folder, or the original fer2013.csv."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  FER2013 cannot be downloaded automatically. Get one of:
    * the Kaggle archive (https://www.kaggle.com/datasets/msambare/fer2013, "Download" gives
      archive.zip with train/<emotion>/*.jpg and test/<emotion>/*.jpg), or the folder it unzips to;
    * the original fer2013.csv (columns emotion,pixels,Usage) from the ICML 2013 challenge
      (https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge).
  Then pass its path as the manual dir (fer_flax does this from --config.data.path), or place
  the .zip or .csv alone in the manual dir (by default ~/tensorflow_datasets/downloads/manual/).
  """

  def __init__(self, *, source: str | os.PathLike | None = None, **kwargs):
    """`source` is the archive, folder or CSV; without it, the TFDS manual dir is read."""
    super().__init__(**kwargs)
    self._source = source

  def _info(self) -> tfds.core.DatasetInfo:
    size = fer2013.IMAGE_SIZE
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 1)),
            'label': tfds.features.ClassLabel(names=fer2013.EMOTIONS),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge',
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source = fer2013.Source(self._source or dl_manager.manual_dir)
    return {split: self._generate_examples(source, split) for split in source.split_sizes()}

  def _generate_examples(self, source: fer2013.Source, split: str):
    for record, image in source.examples(split):
      yield record.key, {'image': image[..., None], 'label': record.label,
                         'file_name': record.key}


def prepare(path: str | os.PathLike, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Returns the prepared `fer2013` builder, preparing it from `path` the first time."""
  source = fer2013.Source(path)
  builder = Fer2013(data_dir=data_dir or None, source=source.path)
  stamp_path = pathlib.Path(builder.data_dir) / _SOURCE_STAMP
  stamp = {'path': str(source.path), 'fingerprint': source.fingerprint()}
  if builder.is_prepared():
    previous = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    if previous.get('fingerprint') != stamp['fingerprint']:
      raise UserError(
          f'{builder.data_dir} was prepared from {previous.get("path", "another source")}, '
          f'not from {source.path}; pass --config.data.tfds_data_dir=NEW_DIR, or delete '
          f'{builder.data_dir} to prepare it again')
    return builder
  builder.download_and_prepare()
  stamp_path.write_text(json.dumps(stamp, indent=2) + '\n')
  return builder
