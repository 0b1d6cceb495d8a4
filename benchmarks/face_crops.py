"""How photos' faces should be cropped to look like FER2013's, and what detect -> crop costs.

  python benchmarks/face_crops.py --data=PATH/TO/fer2013.zip [--calibrate=4000] [--faces=0]
      [--model=pretrained] [--detector=yunet|haar] [--tilt=DEGREES] [--tta=none|flip|tencrop]
      [--json=FILE]

FER2013 faces are pasted, enlarged 2-5x, at random places into larger noisy images, as faces sit in
photos. Then:
1. On `--calibrate` training faces: each detector's boxes are mapped back into the 48x48 frame;
   their medians give `fer_flax.serve.faces.BOX_FRAMING`, and a least-squares fit of the frame from
   YuNet's box and landmarks gives `fer_flax.serve.faces.LANDMARK_FRAMING`.
2. On `public_test` (all of it, or a random `--faces`), turned by up to `--tilt` degrees: the
   detector's recall, and the model's accuracy on the faces it found, as stored against their
   crops: exact (the resampling alone), by detect -> align -> crop, and by the box alone, with the
   constants now in `fer_flax.serve.faces`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fer_flax.data import augment, fer2013
from fer_flax.serve import faces
from fer_flax.serve.predictor import Predictor

CANVAS = (480, 640)  # height, width


def paste(face: np.ndarray, rng: np.random.Generator, tilt: float = 0.0
          ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
  """(canvas, scale, offset, oracle): `face` enlarged by `scale`, placed at `offset` (x, y) and
  turned by up to `tilt` degrees; `oracle` maps the canvas back onto the 48x48 face exactly."""
  scale = rng.uniform(2.0, 5.0)
  size = int(round(48 * scale))
  big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
  noise = rng.integers(0, 256, (CANVAS[0] // 8, CANVAS[1] // 8), dtype=np.uint8)
  canvas = cv2.resize(cv2.GaussianBlur(noise, (5, 5), 0), CANVAS[::-1],
                      interpolation=cv2.INTER_LINEAR)
  x, y = rng.integers(0, CANVAS[1] - size), rng.integers(0, CANVAS[0] - size)
  canvas[y:y + size, x:x + size] = big
  angle = rng.uniform(-tilt, tilt)
  centre = (x + size / 2, y + size / 2)
  canvas = cv2.warpAffine(canvas, cv2.getRotationMatrix2D(centre, angle, 1.0), CANVAS[::-1],
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
  back = np.vstack([cv2.getRotationMatrix2D(centre, -angle, 1.0), [0, 0, 1]])
  oracle = np.array([[48 / size, 0, -48 / size * x], [0, 48 / size, -48 / size * y]]) @ back
  return canvas, size / 48, np.array([x, y], np.float64), oracle


def _found(detections: list[faces.Detection], scale: float, offset: np.ndarray):
  """The detection whose centre lies in the pasted face, if any."""
  for d in detections:
    centre = (np.array(d.box[:2]) + np.array(d.box[2:]) / 2 - offset) / scale
    if (0 <= centre).all() and (centre < 48).all():
      return d
  return None


def calibrate(images: np.ndarray, rng: np.random.Generator) -> dict:
  """The framing constants of `fer_flax.serve.faces`: for each detector, the median square that
  maps its boxes onto the 48x48 frame (BOX_FRAMING); for YuNet, the least-squares map from its box
  and landmarks to that frame (LANDMARK_FRAMING)."""
  detectors = {'yunet': faces.YuNet(), 'haar': faces.Haar()}
  framing = {name: [] for name in detectors}
  features, targets = [], []
  for face in images:
    canvas, scale, offset, _ = paste(face, rng)
    for name, detector in detectors.items():
      d = _found(detector.detect(canvas), scale, offset)
      if d is None:
        continue
      x, y = (np.array(d.box[:2]) - offset) / scale
      w, h = d.box[2] / scale, d.box[3] / scale
      framing[name].append((48 / h, (24 - (y + h / 2)) / h))
      if d.landmarks is not None:
        angle = faces.levelling_angle(d.landmarks)
        to_centre = np.array([24 - (x + w / 2), 24 - (y + h / 2)]) / h
        features.append(faces.landmark_features(d, angle))
        targets.append([*faces.levelled(to_centre, angle), 48 / h])
  landmark_framing, *_ = np.linalg.lstsq(np.array(features), np.array(targets), rcond=None)
  return {'faces': len(images),
          'box_framing': {name: [round(float(v), 3) for v in np.median(values, 0)]
                          for name, values in framing.items()},
          'landmark_framing': np.round(landmark_framing, 4).tolist(),
          'found': {name: len(values) for name, values in framing.items()}}


def evaluate(images: np.ndarray, labels: np.ndarray, predictor: Predictor,
             rng: np.random.Generator, detector: str, tilt: float) -> dict:
  """Recall, and accuracy on the found faces: as stored, cropped exactly (the resampling alone),
  and cropped by detect -> crop with and without alignment."""
  found_by = faces.create_detector(detector)
  crops = {'oracle': [], 'aligned': [], 'box': []}
  found, seconds = [], 0.0
  for i, face in enumerate(images):
    canvas, scale, offset, oracle = paste(face, rng, tilt)
    start = time.perf_counter()
    d = _found(found_by.detect(canvas), scale, offset)
    seconds += time.perf_counter() - start
    if d is None:
      continue
    found.append(i)
    crops['oracle'].append(faces._warp(canvas, oracle))  # pylint: disable=protected-access
    crops['aligned'].append(faces.crop(canvas, d, detector, align=True))
    crops['box'].append(faces.crop(canvas, d, detector, align=False))
  stored = predictor.classify(list(images)).argmax(-1) == labels
  idx = np.asarray(found, int)
  result = {'detector': detector, 'tilt_degrees': tilt, 'faces': len(images),
            'recall': len(idx) / len(images), 'ms_per_detection': 1000 * seconds / len(images),
            'accuracy_as_stored': float(stored[idx].mean())}
  for way, way_crops in crops.items():
    right = predictor.classify(way_crops).argmax(-1) == labels[idx]
    result[f'accuracy_{way}'] = float(right.mean())
    result[f'cost_points_{way}'] = 100 * float(stored[idx].mean() - right.mean())
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True)
  parser.add_argument('--calibrate', type=int, default=4000,
                      help='Training faces for the framing constants; 0 skips it.')
  parser.add_argument('--faces', type=int, default=0, help='public_test faces; 0: all.')
  parser.add_argument('--model', default='pretrained')
  parser.add_argument('--detector', default='yunet', choices=faces.DETECTORS)
  parser.add_argument('--tilt', type=float, default=0.0,
                      help='Turn each pasted face by up to this many degrees.')
  parser.add_argument('--tta', default='none', choices=augment.TTA_MODES,
                      help="Views a face: none, as evaluate scores; flip, predict's default.")
  parser.add_argument('--json')
  args = parser.parse_args()
  source = fer2013.Source(args.data)
  report = {}
  if args.calibrate:
    images, _ = fer2013.load_split(source, 'train')
    order = np.random.default_rng(0).permutation(len(images))[:args.calibrate]
    report['calibration'] = calibrate(images[order, ..., 0], np.random.default_rng(1))
    print(json.dumps(report['calibration'], indent=1))
  images, labels = fer2013.load_split(source, 'public_test')
  if args.faces:  # A random subset: the archive lists the faces class by class.
    order = np.random.default_rng(3).permutation(len(images))[:args.faces]
    images, labels = images[order], labels[order]
  predictor = Predictor.load(args.model, detect=False, tta=args.tta)
  report['public_test'] = {'tta': args.tta, **evaluate(images[..., 0], labels, predictor,
                                                      np.random.default_rng(2), args.detector,
                                                      args.tilt)}
  print(json.dumps(report['public_test'], indent=1))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  main()
