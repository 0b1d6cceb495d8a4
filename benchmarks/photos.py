"""Face detection on real photos, and prediction's throughput on a folder of them.

  python benchmarks/photos.py --photos=DIR [--detectors=yunet,haar] [--throughput=1000]
      [--tta=none,flip,tencrop] [--video_seconds=60] [--json=FILE]

DIR holds photos and a MANIFEST.tsv whose `file` and `faces_counted` columns say how many faces
each shows. There are no boxes to match, so a photo's detections count as found faces up to its
count, and as false boxes past it (look at `--annotate` output to be sure). Detection time is the
median over the photos of the best of 3 runs each (steady state). Throughput runs
`fer_flax.predict.predict_files` (the CLI's path: decode, detect, crop, batched classification)
over the photos repeated to `--throughput` files, and reports photos/s and peak memory, once for
each `--tta` (what test-time augmentation costs a face, end to end; default: the predictor's,
flip). The video figure, with the predictor's default, writes a 640x480, 30 fps mp4 of
`--video_seconds` that pans across the photos (each shown for 2 s, drifting), then runs
`predict_files` on it at 5 sampled frames/s and at every frame, and reports frames analysed per
second and the video seconds done per second.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import pathlib
import resource
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fer_flax.data import images
from fer_flax.serve import faces
from fer_flax.serve.predictor import DEFAULT_TTA, Predictor, open_image, predict_files


def detection(photos: pathlib.Path, detector_name: str) -> dict:
  rows = list(csv.DictReader(open(photos / 'MANIFEST.tsv'), delimiter='\t'))
  detector = faces.create_detector(detector_name)
  found = expected = false = 0
  times, per_photo = [], []
  for row in rows:
    image = np.asarray(images.rgb(open_image(photos / row['file'])))
    runs = []
    for _ in range(3):
      start = time.perf_counter()
      detections = detector.detect(image)
      runs.append(time.perf_counter() - start)
    times.append(min(runs))
    count = int(row['faces_counted'])
    found, expected = found + min(len(detections), count), expected + count
    false += max(0, len(detections) - count)
    per_photo.append({'file': row['file'], 'faces': count, 'detections': len(detections),
                      'scores': [round(d.score, 3) for d in detections]})
  return {'detector': detector_name, 'photos': len(rows), 'faces': expected,
          'recall': found / expected, 'false_boxes': false,
          'median_ms': 1000 * float(np.median(times)), 'max_ms': 1000 * float(max(times)),
          'per_photo': per_photo}


def throughput(photos: pathlib.Path, count: int, tta: str) -> dict:
  files = sorted(p for p in photos.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
  predictor = Predictor.pretrained(tta=tta)
  list(predict_files(predictor, files[:2]))  # Compiles the classifier.
  start, found = time.perf_counter(), 0
  for result in predict_files(predictor, itertools.islice(itertools.cycle(files), count)):
    found += len(result.faces)  # Counted, not kept, as the CLI prints and forgets them.
  seconds = time.perf_counter() - start
  return {'tta': tta, 'files': count, 'seconds': seconds, 'photos_per_sec': count / seconds,
          'faces': found, 'faces_per_sec': found / seconds,
          'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def panning_video(photos: pathlib.Path, seconds: int, path: pathlib.Path) -> None:
  """A 640x480, 30 fps mp4 of the photos, 2 s each, the view drifting across each one."""
  files = sorted(p for p in photos.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 30, (640, 480))
  for index in range(seconds * 30):
    photo = cv2.imread(str(files[index // 60 % len(files)]))
    scale = max(640 / photo.shape[1], 480 / photo.shape[0]) * 1.1
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    drift = index % 60 / 60
    x = int(drift * (photo.shape[1] - 640))
    y = int(drift * (photo.shape[0] - 480))
    writer.write(photo[y:y + 480, x:x + 640])
  writer.release()


def video_throughput(photos: pathlib.Path, seconds: int) -> list[dict]:
  predictor = Predictor.pretrained()
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    path = pathlib.Path(scratch) / 'panning.mp4'
    panning_video(photos, seconds, path)
    list(predict_files(predictor, [path], fps=1))  # Compiles the classifier.
    for fps in (5, 30):
      start, frames = time.perf_counter(), 0
      for result in predict_files(predictor, [path], fps=fps):
        frames += bool(result.faces)
      elapsed = time.perf_counter() - start
      rows.append({'video_seconds': seconds, 'fps': fps, 'frames_with_faces': frames,
                   'seconds': elapsed, 'frames_per_sec': seconds * fps / elapsed,
                   'video_seconds_per_sec': seconds / elapsed,
                   'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--photos', required=True)
  parser.add_argument('--detectors', default='yunet,haar')
  parser.add_argument('--throughput', type=int, default=0, help='Files to predict; 0 skips it.')
  parser.add_argument('--tta', default=DEFAULT_TTA,
                      help='Test-time augmentations to time, by commas.')
  parser.add_argument('--video_seconds', type=int, default=0,
                      help='Length of the panning video to predict on; 0 skips it.')
  parser.add_argument('--json')
  args = parser.parse_args()
  photos = pathlib.Path(args.photos)
  report = {'detection': [detection(photos, name) for name in args.detectors.split(',')]}
  for r in report['detection']:
    print(f"{r['detector']}: {r['recall']:.1%} of {r['faces']} faces, {r['false_boxes']} false "
          f"boxes, {r['median_ms']:.1f} ms a photo (median; max {r['max_ms']:.1f})")
  if args.throughput:
    report['throughput'] = [throughput(photos, args.throughput, tta)
                            for tta in args.tta.split(',')]
    for t in report['throughput']:
      print(f"predict, tta {t['tta']}: {t['photos_per_sec']:.1f} photos/s over {t['files']} "
            f"files ({t['faces']} faces, {t['faces_per_sec']:.1f} a second), peak memory "
            f"{t['peak_rss_mib']:.0f} MiB")
  if args.video_seconds:
    report['video'] = video_throughput(photos, args.video_seconds)
    for v in report['video']:
      print(f"video: {v['fps']} frames/s sampled from {v['video_seconds']} s at 30 fps: "
            f"{v['frames_per_sec']:.1f} frames analysed a second "
            f"({v['video_seconds_per_sec']:.1f}x "
            f"real time), peak memory {v['peak_rss_mib']:.0f} MiB")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  main()
