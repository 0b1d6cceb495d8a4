"""Reads FER2013 in the forms users have it, with no TensorFlow.

Three sources give the same examples:
  * the Kaggle archive (`.zip`), `train/<emotion>/*.jpg` and `test/<emotion>/*.jpg`;
  * the folder that archive unzips to;
  * the original `fer2013.csv` with columns `emotion,pixels,Usage`.

Every image comes out as a 48x48 uint8 grayscale array; label ids follow FER2013.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import pathlib
import zipfile
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from fer_flax.core.errors import UserError
from fer_flax.data.images import IMAGE_SIZE, to_model_input

EMOTIONS = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
NUM_CLASSES = len(EMOTIONS)
SPLITS = ('train', 'public_test', 'private_test', 'test')
# Examples in each split of FER2013 (the original CSV; the Kaggle archive's test/ holds both test
# splits): what shapes the programs compiled ahead of time, without the data (`aot`).
SPLIT_SIZES = {'train': 28_709, 'public_test': 3_589, 'private_test': 3_589, 'test': 7_178}

_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')
_PREFIX_SPLITS = (('PublicTest_', 'public_test'), ('PrivateTest_', 'private_test'))
_USAGE_SPLITS = {'Training': 'train', 'PublicTest': 'public_test', 'PrivateTest': 'private_test'}
_LAYOUT_HINT = ('expected the Kaggle FER2013 layout train/<emotion>/*.jpg and test/<emotion>/*.jpg '
                '(a .zip or its unzipped folder) or the original fer2013.csv')


@dataclasses.dataclass(frozen=True)
class Record:
  """Where one example lives, before its pixels are read."""
  key: str
  label: int
  split: str


def decode_image(data: bytes, name: str) -> np.ndarray:
  """Decodes encoded image bytes; a corrupt file raises a UserError naming it."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      return to_model_input(image)
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    raise UserError(f'{name}: not a readable image ({e}); re-extract or re-download the archive, '
                    'or delete this file') from e


def split_for_file(folder: str, file_name: str) -> str:
  """The split of an image file, from its top folder and its FER2013 file-name prefix."""
  if folder == 'train':
    return 'train'
  for prefix, split in _PREFIX_SPLITS:
    if file_name.startswith(prefix):
      return split
  return 'test'


def _label_for_folder(emotion: str, where: str) -> int:
  try:
    return EMOTIONS.index(emotion.lower())
  except ValueError:
    raise UserError(f'{where}: unknown emotion folder {emotion!r}; FER2013 folders are '
                    f'{", ".join(sorted(EMOTIONS))}: rename or remove it') from None


def _is_hidden(parts: tuple[str, ...]) -> bool:
  return any(p.startswith('.') or p == '__MACOSX' for p in parts)


class _ImageTree:
  """Images named `<root>/{train,test}/<emotion>/<file>`, in a zip or on disk."""

  def __init__(self, path: pathlib.Path, names: list[str]):
    self.path = path
    self._members: dict[str, str] = {}  # key (train/angry/x.jpg) -> member name
    for name in names:
      parts = tuple(pathlib.PurePosixPath(name).parts)
      if (len(parts) < 3 or _is_hidden(parts) or parts[-3] not in ('train', 'test')
          or not parts[-1].lower().endswith(_IMAGE_SUFFIXES)):
        continue
      self._members['/'.join(parts[-3:])] = name
    if not any(k.startswith('train/') for k in self._members):
      raise UserError(f'{path}: no train/ folder with images; {_LAYOUT_HINT}')

  def index(self) -> list[Record]:
    records = []
    for key in sorted(self._members):
      folder, emotion, file_name = key.split('/')
      label = _label_for_folder(emotion, f'{self.path}: {folder}/{emotion}')
      records.append(Record(key, label, split_for_file(folder, file_name)))
    return records

  def _read_bytes(self, member: str) -> bytes:
    raise NotImplementedError

  def read(self, record: Record) -> np.ndarray:
    return decode_image(self._read_bytes(self._members[record.key]), f'{self.path}: {record.key}')


class _ZipTree(_ImageTree):

  def __init__(self, path: pathlib.Path):
    try:
      self._zip = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
      raise UserError(f'{path}: not a readable zip archive ({e}); re-download it') from e
    super().__init__(path, [i.filename for i in self._zip.infolist() if not i.is_dir()])

  def _read_bytes(self, member: str) -> bytes:
    try:
      return self._zip.read(member)
    except (zipfile.BadZipFile, OSError) as e:
      raise UserError(f'{self.path}: {member}: cannot be read from the archive ({e}); '
                      're-download it') from e


class _DirTree(_ImageTree):

  def __init__(self, path: pathlib.Path):
    names = [str(p.relative_to(path).as_posix()) for p in path.rglob('*') if p.is_file()]
    super().__init__(path, names)

  def _read_bytes(self, member: str) -> bytes:
    return (self.path / member).read_bytes()


class _Csv:
  """The original `fer2013.csv`: one row per image, `emotion,pixels,Usage`."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    with self._open() as f:
      header = next(csv.reader(f), None)
    columns = [c.strip() for c in header or []]
    missing = [c for c in ('emotion', 'pixels', 'Usage') if c not in columns]
    if missing:
      raise UserError(f'{path}: missing column(s) {", ".join(missing)}; the original fer2013.csv '
                      'has the header emotion,pixels,Usage')
    self._col = {c: columns.index(c) for c in ('emotion', 'pixels', 'Usage')}

  def _open(self):
    return open(self.path, newline='', encoding='utf-8')

  def _rows(self) -> Iterator[tuple[int, list[str]]]:
    """Yields (line number, row) with line numbers as an editor shows them."""
    with self._open() as f:
      reader = csv.reader(f)
      next(reader)
      for row in reader:
        if row:
          yield reader.line_num, row

  def _parse(self, line: int, row: list[str]) -> Record:
    where = f'{self.path}: line {line}'
    try:
      emotion, usage = row[self._col['emotion']], row[self._col['Usage']].strip()
    except IndexError:
      raise UserError(f'{where}: {len(row)} columns, expected 3 (emotion,pixels,Usage); '
                      'fix or delete this row') from None
    if not emotion.strip().isdigit() or int(emotion) >= len(EMOTIONS):
      raise UserError(f'{where}: emotion {emotion!r} is not a label id 0-6; fix or delete this row')
    if usage not in _USAGE_SPLITS:
      raise UserError(f'{where}: Usage {usage!r} is not one of {", ".join(_USAGE_SPLITS)}; '
                      'fix or delete this row')
    return Record(f'line_{line}', int(emotion), _USAGE_SPLITS[usage])

  def index(self) -> list[Record]:
    return [self._parse(line, row) for line, row in self._rows()]

  def read_split(self, split: str) -> Iterator[tuple[Record, np.ndarray]]:
    for line, row in self._rows():
      record = self._parse(line, row)
      if record.split != split:
        continue
      values = row[self._col['pixels']].split()
      if len(values) != IMAGE_SIZE * IMAGE_SIZE:
        raise UserError(f'{self.path}: line {line}: {len(values)} pixel values, expected '
                        f'{IMAGE_SIZE * IMAGE_SIZE} (48x48); fix or delete this row')
      try:
        pixels = np.array(values, dtype=np.int32)
      except ValueError:
        raise UserError(f'{self.path}: line {line}: pixels must be integers 0-255; '
                        'fix or delete this row') from None
      if pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f'{self.path}: line {line}: pixel values outside 0-255; '
                        'fix or delete this row')
      yield record, pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def resolve_source(path: str | os.PathLike) -> pathlib.Path:
  """The archive, folder or CSV a user's path points at (a folder may hold one of them)."""
  path = pathlib.Path(path).expanduser()
  if not str(path).strip() or not path.exists():
    raise UserError(f'data path {str(path)!r} does not exist; pass --config.data.path=PATH to '
                    'fer2013.zip, its unzipped folder, or fer2013.csv')
  if path.is_dir() and not (path / 'train').is_dir():
    candidates = [p for p in sorted(path.iterdir()) if p.suffix.lower() in ('.zip', '.csv')]
    if len(candidates) != 1:
      found = ', '.join(p.name for p in candidates) or 'nothing'
      raise UserError(f'{path}: found {found}; {_LAYOUT_HINT}. Point the path at one of them')
    path = candidates[0]
  return path.resolve()


class Source:
  """FER2013 examples from any supported form, read split by split."""

  def __init__(self, path: str | os.PathLike):
    self.path = resolve_source(path)
    if self.path.is_dir():
      self._reader = _DirTree(self.path)
    elif self.path.suffix.lower() == '.zip':
      self._reader = _ZipTree(self.path)
    elif self.path.suffix.lower() == '.csv':
      self._reader = _Csv(self.path)
    else:
      raise UserError(f'{self.path}: unsupported file type; {_LAYOUT_HINT}')
    self.records = self._reader.index()

  def split_sizes(self) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for r in self.records:
      sizes[r.split] = sizes.get(r.split, 0) + 1
    return {s: sizes[s] for s in SPLITS if s in sizes}

  def examples(self, split: str) -> Iterator[tuple[Record, np.ndarray]]:
    """Yields (record, 48x48 uint8 image) for every example of `split`."""
    if isinstance(self._reader, _Csv):
      yield from self._reader.read_split(split)
      return
    for record in self.records:
      if record.split == split:
        yield record, self._reader.read(record)

  def fingerprint(self) -> str:
    """Identifies the source's contents cheaply enough to check on every run."""
    h = hashlib.sha256()
    if self.path.is_dir():
      for p in sorted(self.path.rglob('*')):
        if p.is_file():
          h.update(f'{p.relative_to(self.path).as_posix()}:{p.stat().st_size}\n'.encode())
    else:
      with open(self.path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
          h.update(chunk)
    return h.hexdigest()


def load_split(source: Source, split: str) -> tuple[np.ndarray, np.ndarray]:
  """([N, 48, 48, 1] uint8 images, [N] int32 labels) of `split`, decoded on the host."""
  sizes = source.split_sizes()
  if split not in sizes:
    raise UserError(f'split {split!r} is not in {source.path} (it has {", ".join(sizes)}); '
                    'choose one of those with --config.data.eval_split / '
                    '--config.data.train_split')
  images = np.empty((sizes[split], IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
  labels = np.empty((sizes[split],), np.int32)
  for i, (record, image) in enumerate(source.examples(split)):
    images[i, ..., 0], labels[i] = image, record.label
  return images, labels
