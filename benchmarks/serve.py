"""The HTTP server's throughput and latency, with and without micro-batching.

  python benchmarks/serve.py [--photos=DIR | --crops] [--requests=200] [--clients=1,16]
      [--batch_wait_ms=5,0] [--rounds=3] [--json=FILE]

For each batch wait (5 ms, the server's default: micro-batching; 0: each request classified
alone) it starts `python -m fer_flax.serve --model=pretrained` on a free port, sends 10 requests
to warm it, then at each number of concurrent clients (each connected and answered once before
the clock starts) sends `--requests` requests, each one photo as a raw JPEG or PNG body, cycling
through the photos: the test photo, every photo in DIR, or with `--crops` the test photo's face
as a 48x48 crop, sent with detect=false, as a client that finds faces itself would send it. It
reports requests and faces answered a second, the median and 99th-percentile latency seen by the
client, and the server's peak resident memory (VmHWM, after all the requests). The clients run in
this process, on the same cores as the server: figures are for the pair on one machine. Runs
vary by up to a third on a shared 2-core machine, so the settings take turns for `--rounds`
rounds, each with a fresh server, and the table gives each figure's median over the rounds and
requests a second as median (lowest-highest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import platform
import socket
import subprocess
import sys
import time

import httpx2
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTO = REPO / 'tests' / 'data' / 'astronaut.jpg'
_TYPES = {'.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.png': 'image/png'}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(batch_wait_ms: float) -> tuple[subprocess.Popen, str]:
  port = _free_port()
  process = subprocess.Popen(
      [sys.executable, '-m', 'fer_flax.serve', '--model=pretrained', f'--port={port}',
       f'--batch_wait_ms={batch_wait_ms}'], cwd=REPO, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  url = f'http://127.0.0.1:{port}'
  for _ in range(600):
    try:
      if httpx2.get(f'{url}/healthz', timeout=2).status_code == 200:
        return process, url
    except httpx2.HTTPError:
      if process.poll() is not None:
        raise SystemExit(f'the server did not start: {process.stderr.read()}') from None
    time.sleep(0.2)
  raise SystemExit('the server did not start within 120 s')


def _peak_megabytes(pid: int) -> float:
  for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
    if line.startswith('VmHWM:'):
      return int(line.split()[1]) / 1024
  return float('nan')


async def _load(url: str, photos: list[tuple[str, bytes]], clients: int, requests: int,
                detect: bool = True) -> dict:
  """`requests` requests from `clients` concurrent clients: rates, latencies, faces. Each client
  connects and sends one request first, unmeasured; the clock starts when all have."""
  latencies, faces, next_request = [], [0], iter(range(requests))
  connected = asyncio.Barrier(clients + 1)
  params = {'detect': str(detect).lower()}

  async def client() -> None:
    async with httpx2.AsyncClient(base_url=url, timeout=120) as session:
      await session.post('/v1/predict', content=photos[0][1], params=params,
                         headers={'Content-Type': photos[0][0]})
      await connected.wait()
      for i in next_request:
        kind, data = photos[i % len(photos)]
        start = time.perf_counter()
        answer = await session.post('/v1/predict', content=data, params=params,
                                    headers={'Content-Type': kind})
        latencies.append(time.perf_counter() - start)
        if answer.status_code == 200:
          faces[0] += len(answer.json()['images'][0]['faces'])
        elif answer.status_code != 422:  # 422: a photo with no face found; counted as answered
          raise SystemExit(f'{answer.status_code}: {answer.text}')

  tasks = [asyncio.create_task(client()) for _ in range(clients)]
  await connected.wait()
  start = time.perf_counter()
  await asyncio.gather(*tasks)
  seconds = time.perf_counter() - start
  return {'clients': clients, 'requests': requests, 'seconds': round(seconds, 2),
          'requests_per_s': round(requests / seconds, 1),
          'faces_per_s': round(faces[0] / seconds, 1),
          'p50_ms': round(1000 * float(np.percentile(latencies, 50)), 1),
          'p99_ms': round(1000 * float(np.percentile(latencies, 99)), 1)}


def _face_crop() -> bytes:
  """The test photo's face as the 48x48 PNG the server's own crop of it is."""
  import io

  from PIL import Image

  from fer_flax.serve.predictor import Predictor, open_image
  _, crops = Predictor.pretrained().faces_of(open_image(PHOTO))
  out = io.BytesIO()
  Image.fromarray(crops[0]).save(out, 'PNG')
  return out.getvalue()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--photos', help='a folder of photos; default: the test photo')
  parser.add_argument('--crops', action='store_true', help="send the test photo's face, cropped")
  parser.add_argument('--batch_wait_ms', default='5,0', help='the server settings to compare')
  parser.add_argument('--requests', type=int, default=200, help='requests per measurement')
  parser.add_argument('--clients', default='1,16', help='concurrent clients, comma-separated')
  parser.add_argument('--rounds', type=int, default=3, help='turns each setting takes')
  parser.add_argument('--json', help='also write the figures here')
  args = parser.parse_args()
  files = ([PHOTO] if args.photos is None else
           sorted(p for p in pathlib.Path(args.photos).iterdir() if p.suffix.lower() in _TYPES))
  photos = [(_TYPES[p.suffix.lower()], p.read_bytes()) for p in files]
  if args.crops:
    photos = [('image/png', _face_crop())]
  rows = []
  for round_ in range(args.rounds):
    for wait in map(float, args.batch_wait_ms.split(',')):
      process, url = _start(wait)
      try:
        asyncio.run(_load(url, photos, 1, 10, not args.crops))
        for clients in map(int, args.clients.split(',')):
          row = {'round': round_, 'batch_wait_ms': wait,
                 **asyncio.run(_load(url, photos, clients, args.requests, not args.crops))}
          row['server_peak_mb'] = round(_peak_megabytes(process.pid))
          rows.append(row)
          print(json.dumps(row), flush=True)
      finally:
        process.terminate()
        process.wait(timeout=30)
  cpu = next((line.split(':', 1)[1].strip() for line in
              pathlib.Path('/proc/cpuinfo').read_text().splitlines()
              if line.startswith('model name')), platform.processor())
  what = 'its face, cropped' if args.crops else f'{len(files)} photo(s)'
  print(f'\n{what} from {args.photos or PHOTO}; {cpu}\n')
  print('| batch wait ms | clients | requests/s | faces/s | p50 ms | p99 ms | server peak MB |')
  print('|---|---|---|---|---|---|---|')
  for setting in dict.fromkeys((r['batch_wait_ms'], r['clients']) for r in rows):
    same = [r for r in rows if (r['batch_wait_ms'], r['clients']) == setting]
    median = {k: float(np.median([r[k] for r in same])) for k in same[0] if k != 'round'}
    rates = [r['requests_per_s'] for r in same]
    print(f"| {setting[0]:g} | {setting[1]} | {median['requests_per_s']:.1f} ({min(rates):.1f}-"
          f"{max(rates):.1f}) | {median['faces_per_s']:.1f} | {median['p50_ms']:.1f} | "
          f"{median['p99_ms']:.1f} | {median['server_peak_mb']:.0f} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({'cpu': cpu, 'photos': [str(f) for f in files],
                                                   'rows': rows}, indent=2) + '\n')


if __name__ == '__main__':
  main()
