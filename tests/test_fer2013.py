"""The TF-free readers: every form gives the same examples, splits and labels, or a clear error."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from fer_flax.core.errors import UserError
from fer_flax.data import fer2013
from tests import helpers


def _by_content(source):
  """(split, label, pixels) of every example, in a form independent of keys and order."""
  out = []
  for split in source.split_sizes():
    out += [(split, r.label, img.tobytes()) for r, img in source.examples(split)]
  return sorted(out)


def test_zip_folder_and_csv_agree(tmp_path):
  examples = helpers.make_examples({'Training': 3, 'PublicTest': 2, 'PrivateTest': 2})
  zipped = fer2013.Source(helpers.write_zip(tmp_path / 'a.zip', examples))
  folder = fer2013.Source(helpers.write_folder(tmp_path / 'unzipped', examples))
  table = fer2013.Source(helpers.write_csv(tmp_path / 'fer2013.csv', examples))
  expected = sorted(({'Training': 'train', 'PublicTest': 'public_test',
                      'PrivateTest': 'private_test'}[u], label, image.tobytes())
                    for u, label, image in examples)
  assert _by_content(zipped) == expected
  assert _by_content(folder) == expected
  assert _by_content(table) == expected
  assert zipped.split_sizes() == {'train': 21, 'public_test': 14, 'private_test': 14}


def test_jpeg_zip_and_folder_agree(tmp_path):
  """The Kaggle archive holds JPEGs: both readers must decode them identically."""
  rng = np.random.default_rng(1)
  zpath = tmp_path / 'k.zip'
  with zipfile.ZipFile(zpath, 'w') as z:
    for i, folder in enumerate(['train/happy', 'test/sad']):
      buf = io.BytesIO()
      Image.fromarray(helpers.face(i, rng)).save(buf, format='JPEG')
      name = f'{folder}/{"Training" if i == 0 else "PublicTest"}_{i}.jpg'
      z.writestr(name, buf.getvalue())
      (tmp_path / 'dir' / folder).mkdir(parents=True)
      (tmp_path / 'dir' / name).write_bytes(buf.getvalue())
  assert _by_content(fer2013.Source(zpath)) == _by_content(fer2013.Source(tmp_path / 'dir'))


@pytest.mark.parametrize('folder,name,split', [
    ('train', 'Training_1.jpg', 'train'),
    ('train', 'whatever.jpg', 'train'),
    ('test', 'PublicTest_1.jpg', 'public_test'),
    ('test', 'PrivateTest_1.jpg', 'private_test'),
    ('test', 'im1.jpg', 'test'),
])
def test_split_for_file(folder, name, split):
  assert fer2013.split_for_file(folder, name) == split


def test_label_ids_follow_fer2013(tmp_path):
  examples = helpers.make_examples({'Training': 1})
  source = fer2013.Source(helpers.write_folder(tmp_path, examples))
  labels = {r.key.split('/')[1]: r.label for r in source.records}
  assert labels == {'angry': 0, 'disgust': 1, 'fear': 2, 'happy': 3, 'sad': 4, 'surprise': 5,
                    'neutral': 6}


def test_unprefixed_test_folder_is_test_split(tmp_path):
  examples = helpers.make_examples({'Training': 1, 'PublicTest': 1})
  source = fer2013.Source(helpers.write_zip(tmp_path / 'a.zip', examples, prefixes=False))
  assert source.split_sizes() == {'train': 7, 'test': 7}


def test_archive_under_a_top_folder_and_folder_holding_a_zip(tmp_path):
  examples = helpers.make_examples({'Training': 1})
  helpers.write_folder(tmp_path / 'outer' / 'fer2013', examples)
  assert fer2013.Source(tmp_path / 'outer' / 'fer2013').split_sizes() == {'train': 7}
  (tmp_path / 'holder').mkdir()
  helpers.write_zip(tmp_path / 'holder' / 'archive.zip', examples)
  assert fer2013.Source(tmp_path / 'holder').path.name == 'archive.zip'


def _zip(tmp_path, members: dict[str, bytes]):
  path = tmp_path / 'bad.zip'
  with zipfile.ZipFile(path, 'w') as z:
    for name, data in members.items():
      z.writestr(name, data)
  return path


def _png(seed=0):
  buf = io.BytesIO()
  Image.fromarray(helpers.face(0, np.random.default_rng(seed))).save(buf, format='PNG')
  return buf.getvalue()


def test_missing_path_names_the_fix(tmp_path):
  with pytest.raises(UserError, match=r'does not exist; pass --config.data.path'):
    fer2013.Source(tmp_path / 'nope.zip')


def test_archive_without_train_folder(tmp_path):
  with pytest.raises(UserError, match=r'bad.zip: no train/ folder'):
    fer2013.Source(_zip(tmp_path, {'test/angry/PublicTest_1.png': _png()}))


def test_unknown_emotion_folder(tmp_path):
  path = _zip(tmp_path, {'train/angry/a.png': _png(), 'train/confused/b.png': _png()})
  with pytest.raises(UserError, match=r"train/confused: unknown emotion folder 'confused'"):
    fer2013.Source(path)


def test_corrupt_image_names_the_file(tmp_path):
  path = _zip(tmp_path, {'train/angry/good.png': _png(), 'train/angry/broken.png': b'\x89PNGjunk'})
  source = fer2013.Source(path)
  with pytest.raises(UserError, match=r'train/angry/broken.png: not a readable image'):
    list(source.examples('train'))


def test_truncated_jpeg_names_the_file(tmp_path):
  buf = io.BytesIO()
  Image.fromarray(helpers.face(0, np.random.default_rng(0))).save(buf, format='JPEG')
  path = _zip(tmp_path, {'train/sad/cut.jpg': buf.getvalue()[:200]})
  with pytest.raises(UserError, match=r'train/sad/cut.jpg'):
    list(fer2013.Source(path).examples('train'))


def test_not_a_zip(tmp_path):
  path = tmp_path / 'fer2013.zip'
  path.write_text('hello')
  with pytest.raises(UserError, match=r'not a readable zip archive'):
    fer2013.Source(path)


def test_csv_wrong_pixel_count_names_the_row(tmp_path):
  path = tmp_path / 'fer2013.csv'
  good = ' '.join(['7'] * 2304)
  path.write_text(f'emotion,pixels,Usage\n3,{good},Training\n4,{good} 9,Training\n')
  with pytest.raises(UserError, match=r'fer2013.csv: line 3: 2305 pixel values, expected 2304'):
    list(fer2013.Source(path).examples('train'))


@pytest.mark.parametrize('row,message', [
    ('9,1 2,Training', r"line 2: emotion '9' is not a label id"),
    ('1,1 2,Validation', r"line 2: Usage 'Validation' is not one of"),
])
def test_csv_bad_rows_name_the_row(tmp_path, row, message):
  path = tmp_path / 'fer2013.csv'
  path.write_text(f'emotion,pixels,Usage\n{row}\n')
  with pytest.raises(UserError, match=message):
    fer2013.Source(path)


def test_csv_missing_column(tmp_path):
  path = tmp_path / 'train.csv'
  path.write_text('emotion,pixels\n1,2\n')
  with pytest.raises(UserError, match=r'missing column\(s\) Usage'):
    fer2013.Source(path)
