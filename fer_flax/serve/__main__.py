"""Serves the HTTP API and the web page (`fer_flax.serve.api`; docs/serve.md).

  python -m fer_flax.serve --model=pretrained [--host=127.0.0.1] [--port=8000]
  python -m fer_flax.serve --workdir=DIR [--step=N] [--api_key=KEY]

Then open http://127.0.0.1:8000/ for the page, or send photos:

  curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict

It listens on this machine only unless --host says otherwise; give a key (--api_key, or the
FER_FLAX_API_KEY environment variable) before letting others reach it.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from absl import flags

from fer_flax import predict
from fer_flax.core import cli
from fer_flax.core.errors import UserError, exits_on_user_error

FLAGS = flags.FLAGS


def _define_flags() -> None:
  predict.define_predictor_flags()
  flags.adopt_module_key_flags(predict)  # --help lists them here too
  flags.DEFINE_string('host', '127.0.0.1', 'The address to listen on; 0.0.0.0 for every '
                      'network (give --api_key then).')
  flags.DEFINE_integer('port', 8000, 'The port to listen on.')
  flags.DEFINE_string('api_key', None, 'Requests to /v1/ must carry this key in the X-API-Key '
                      'header; default: the FER_FLAX_API_KEY environment variable, else none.')
  flags.DEFINE_float('max_body_mb', 20.0, 'Largest request body, in megabytes.')
  flags.DEFINE_float('max_megapixels', 50.0, 'Largest photo, in megapixels.')
  flags.DEFINE_integer('max_images', 16, 'Most photos in one request.')
  flags.DEFINE_float('timeout', 30.0, 'Seconds a request may take before a 503.')
  flags.DEFINE_integer('max_batch', 64, 'Most faces classified in one batch.')
  flags.DEFINE_float('batch_wait_ms', 5.0, 'How long a batch waits for faces from other '
                     'requests; 0: no micro-batching, each request classified alone.')
  flags.DEFINE_integer('threads', os.cpu_count() or 2, 'Threads that decode photos and find '
                       'faces.')


def _check_port(host: str, port: int) -> None:
  """Refuses a port another program holds now, before the model is loaded."""
  try:
    with socket.create_server((host, port)):
      pass
  except OSError as e:
    reason = os.strerror(e.errno) if e.errno else str(e)
    raise UserError(f'cannot listen on {host}:{port} ({reason}): pass another --port, or --host'
                    ) from None


@exits_on_user_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}: photos are sent to the server, not given '
                    'to it')
  if FLAGS.max_batch < 1 or FLAGS.max_images < 1 or FLAGS.batch_wait_ms < 0 or FLAGS.timeout <= 0:
    raise UserError('--max_batch and --max_images must be at least 1, --batch_wait_ms at least 0 '
                    'and --timeout above 0')
  _check_port(FLAGS.host, FLAGS.port)
  try:
    import uvicorn

    from fer_flax.serve import api
  except ImportError as e:
    raise UserError(f'the server needs the serve extra ({e.name} is missing): '
                    "pip install 'fer_flax[serve]'") from None
  loaded, predictor = predict.predictor_from_flags(batch_size=FLAGS.max_batch)
  start = time.perf_counter()
  predictor.warm_up()
  logging.info('compiled the model for batches of 1 to %d faces in %.1f s', FLAGS.max_batch,
               time.perf_counter() - start)
  settings = api.Settings(
      max_body_bytes=int(FLAGS.max_body_mb * 2**20), max_pixels=int(FLAGS.max_megapixels * 1e6),
      max_images=FLAGS.max_images, timeout=FLAGS.timeout, max_batch=FLAGS.max_batch,
      batch_wait=FLAGS.batch_wait_ms / 1000, threads=FLAGS.threads,
      api_key=FLAGS.api_key or os.environ.get(api.API_KEY_ENV) or None)
  if settings.api_key is None and FLAGS.host not in ('127.0.0.1', 'localhost', '::1'):
    logging.warning('listening on %s without an API key: anyone who reaches it may use it',
                    FLAGS.host)
  name = FLAGS.model or FLAGS.workdir
  model = api.model_description(loaded, name, FLAGS.detector, FLAGS.tta)
  app = api.create_app(predictor, model, settings)
  print(f'fer_flax: serving {name} on http://{FLAGS.host}:{FLAGS.port}/ (Ctrl-C stops)',
        flush=True)
  uvicorn.run(app, host=FLAGS.host, port=FLAGS.port, log_level='warning')


def run() -> None:
  """`fer-flax-serve`, `python -m fer_flax.serve`."""
  cli.run(main, _define_flags)


if __name__ == '__main__':
  run()
