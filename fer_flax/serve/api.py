"""Emotions over HTTP: the API and the web page that `python -m fer_flax.serve` serves.

  POST /v1/predict    photos (multipart files, or one raw image body) -> each face's emotion
  GET  /v1/model      what is loaded, and where its accuracy figure comes from
  GET  /healthz       200 while the server is up
  GET  /openapi.json  the API, described
  GET  /              the web page (fer_flax/serve/web/): photos and the camera

Photos are decoded and their faces found in a pool of threads, off the event loop; the faces of
concurrent requests are classified together (`batcher.MicroBatcher`). Every request that cannot be
answered gets a 4xx (or a 503 when the server is too busy to answer in time) with one line of JSON,
{"error": "..."}, saying what and why; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import pathlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import fastapi
import numpy as np
import pydantic
from fastapi import responses, staticfiles
from starlette import exceptions as starlette_exceptions
from starlette import requests as starlette_requests

from fer_flax import models
from fer_flax.core.errors import ImageError, UserError
from fer_flax.data import fer2013
from fer_flax.serve import batcher, loading
from fer_flax.serve.predictor import Predictor, open_image
from fer_flax.serve.results import make_face, record

WEB_DIR = pathlib.Path(__file__).parent / 'web'
API_KEY_ENV = 'FER_FLAX_API_KEY'
_STATUS = {'not an image': 415, 'unreadable': 400, 'too large': 413, 'unsupported': 415}
_RAW_TYPES = ('image/', 'application/octet-stream')
_log = logging.getLogger('fer_flax.serve')


@dataclasses.dataclass(frozen=True)
class Settings:
  """The server's limits and batching; `python -m fer_flax.serve` sets them from its flags."""
  max_body_bytes: int = 20 * 2**20
  max_pixels: int = 50_000_000
  max_images: int = 16
  timeout: float = 30.0
  max_batch: int = 64
  batch_wait: float = 0.005
  threads: int = os.cpu_count() or 2
  api_key: str | None = None


class HttpError(Exception):
  """A request the server refuses: its status and one line saying what and why."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class FaceOut(pydantic.BaseModel):
  """A face, with the fields `python -m fer_flax.predict --json` prints."""
  file: str
  face: int = pydantic.Field(description='Its rank in the photo, largest first, from 0.')
  box: list[int] | None = pydantic.Field(
      description='x, y, width, height in the photo (upright per its EXIF); null: not detected.')
  score: float | None = pydantic.Field(description="The face detector's score.")
  emotion: str
  confidence: float
  probabilities: dict[str, float]


class ImageOut(pydantic.BaseModel):
  file: str = pydantic.Field(description='The file name sent, or "body" for a raw body.')
  width: int
  height: int
  faces: list[FaceOut]


class PredictOut(pydantic.BaseModel):
  images: list[ImageOut]
  milliseconds: float = pydantic.Field(description='Time spent on the request in the server.')


class ErrorOut(pydantic.BaseModel):
  error: str


class Accuracy(pydantic.BaseModel):
  value: float | None
  split: str
  measured: str


class ModelOut(pydantic.BaseModel):
  name: str
  source: str
  architecture: str
  parameters: int
  step: int
  labels: list[str]
  input: dict[str, Any]
  detector: str
  tta: str
  accuracy: Accuracy


class Service:
  """What the routes share: the predictor, the micro-batcher and the detection threads."""

  def __init__(self, predictor: Predictor, settings: Settings):
    self.predictor, self.settings = predictor, settings
    self.finding = 0  # Requests whose faces are being found: batches wait for them.
    self.batcher = batcher.MicroBatcher(predictor.classify, settings.max_batch,
                                        settings.batch_wait, lambda: self.finding)
    self._pool = concurrent.futures.ThreadPoolExecutor(settings.threads, 'fer_flax-detect')

  def _faces_of(self, name: str, data: bytes, detect: bool
                ) -> tuple[tuple[int, int], list, list[np.ndarray]]:
    """In a thread: (size, detections, crops) of one photo; HttpError when it has no use."""
    try:
      image = open_image(data, self.settings.max_pixels, name)
      detections, crops = self.predictor.faces_of(image, detect)
    except ImageError as e:
      raise HttpError(_STATUS[e.reason], str(e)) from None
    except UserError as e:
      raise HttpError(422, str(e)) from None
    except Exception as e:  # A photo that trips OpenCV or PIL must not take a 500 with it.
      _log.exception('%s', name)
      raise HttpError(422, f'{name}: could not be read as a photo ({type(e).__name__}: {e})'
                      ) from None
    if not crops:
      raise HttpError(422, f'{name}: no face found (for photos that are already cropped faces, '
                           'send detect=false)')
    return image.size, detections, crops

  async def predict(self, photos: list[tuple[str, bytes]], detect: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    self.finding += 1
    try:
      found = await asyncio.gather(
          *(loop.run_in_executor(self._pool, self._faces_of, name, data, detect)
            for name, data in photos), return_exceptions=True)
    finally:
      self.finding -= 1
    for outcome in found:  # The first refusal in the order sent.
      if isinstance(outcome, BaseException):
        raise outcome
    probabilities = iter(await self.batcher.classify([c for _, _, crops in found for c in crops]))
    images = []
    for (name, _), (size, detections, _) in zip(photos, found, strict=True):
      faces = [make_face(d, next(probabilities)) for d in detections]
      images.append({'file': name, 'width': size[0], 'height': size[1],
                     'faces': [record(name, i, face) for i, face in enumerate(faces)]})
    return {'images': images}

  async def close(self) -> None:
    await self.batcher.close()
    self._pool.shutdown(wait=False, cancel_futures=True)


async def _body(request: fastapi.Request, limit: int) -> bytes:
  """The request's body, refused past `limit` bytes before more of it is read."""
  too_large = HttpError(413, f'the body is over the {limit / 2**20:g} MB limit; send smaller or '
                             'fewer photos (or start the server with a larger --max_body_mb)')
  declared = request.headers.get('content-length')
  if declared and declared.isdigit() and int(declared) > limit:
    raise too_large
  body = bytearray()
  async for chunk in request.stream():
    body += chunk
    if len(body) > limit:
      raise too_large
  return bytes(body)


async def _photos(request: fastapi.Request, settings: Settings) -> list[tuple[str, bytes]]:
  """(name, bytes) of each photo sent: the files of a multipart form, or a raw image body."""
  content_type = request.headers.get('content-type', 'application/octet-stream').lower()
  multipart = content_type.startswith('multipart/form-data')
  if not multipart and not content_type.startswith(_RAW_TYPES):
    raise HttpError(415, f'content type {content_type.split(";")[0]!r} is not a photo: send files '
                         'as multipart/form-data (curl -F file=@photo.jpg) or one photo as the '
                         'body with its image/* type')
  body = await _body(request, settings.max_body_bytes)
  if not body:
    raise HttpError(400, 'the body is empty: send a photo')
  if not multipart:
    return [('body', body)]

  async def replay() -> dict[str, Any]:
    return {'type': 'http.request', 'body': body, 'more_body': False}

  try:
    form = await starlette_requests.Request(request.scope, replay).form(
        max_files=settings.max_images, max_fields=settings.max_images)
  except starlette_exceptions.HTTPException as e:
    raise HttpError(400, f'unreadable multipart form: {e.detail}') from None
  files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
           if not isinstance(value, str)]
  await form.close()
  if not files:
    raise HttpError(400, 'the form holds no files: send each photo as a file part '
                         '(curl -F file=@photo.jpg)')
  empty = [name for name, data in files if not data]
  if empty:
    raise HttpError(400, f'{empty[0]}: the file is empty')
  return files


def model_description(loaded: loading.LoadedModel, name: str, detector: str,
                      tta: str) -> dict[str, Any]:
  """GET /v1/model's answer for the model `load_model` loaded, applied with `tta`."""
  config = loaded.config
  split = config.data.eval_split
  return {
      'name': name, 'source': loaded.source, 'architecture': config.model.name,
      'parameters': models.count_parameters(loaded.variables['params']),
      'step': loaded.step, 'labels': list(fer2013.EMOTIONS),
      'input': {'height': fer2013.IMAGE_SIZE, 'width': fer2013.IMAGE_SIZE, 'channels': 1,
                'color': 'grayscale, 0-255'},
      'detector': detector, 'tta': tta,
      'accuracy': {'value': loaded.accuracy, 'split': split,
                   'measured': f'by training, on {split}, for step {loaded.step} in float32, '
                               'single view (python -m fer_flax.evaluate measures it again)'},
  }


def _error(status: int, message: str, headers: dict[str, str] | None = None
           ) -> responses.JSONResponse:
  return responses.JSONResponse({'error': ' '.join(str(message).split())}, status, headers)


def create_app(predictor: Predictor, model: dict[str, Any],
               settings: Settings = Settings()) -> fastapi.FastAPI:
  """The API and the page, around a loaded predictor; `model` is GET /v1/model's answer."""
  service = Service(predictor, settings)

  @contextlib.asynccontextmanager
  async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
    yield
    await service.close()

  # The framework's own docs pages fetch scripts from the internet: only the description is served.
  app = fastapi.FastAPI(title='fer_flax', version='1', lifespan=lifespan, docs_url=None,
                        redoc_url=None, description='The emotions of the faces in photos.')
  app.state.service = service

  @app.exception_handler(HttpError)
  async def refused(_: fastapi.Request, e: HttpError) -> responses.JSONResponse:
    return _error(e.status, str(e))

  @app.exception_handler(starlette_exceptions.HTTPException)
  async def http_error(_: fastapi.Request, e: starlette_exceptions.HTTPException
                       ) -> responses.JSONResponse:
    return _error(e.status_code, e.detail, e.headers)  # 405's Allow header, say

  @app.exception_handler(Exception)
  async def failed(_: fastapi.Request, e: Exception) -> responses.JSONResponse:
    _log.error('internal error', exc_info=e)  # A bug: still one line of JSON for the client.
    return _error(500, f'internal error ({type(e).__name__}); the server log has the details')

  @app.exception_handler(fastapi.exceptions.RequestValidationError)
  async def invalid(_: fastapi.Request, e: fastapi.exceptions.RequestValidationError
                    ) -> responses.JSONResponse:
    problems = '; '.join(f'{".".join(map(str, p["loc"][1:]))}: {p["msg"]}' for p in e.errors())
    return _error(422, problems)

  def check_key(x_api_key: str | None = fastapi.Header(None),
                authorization: str | None = fastapi.Header(None)) -> None:
    if settings.api_key is None:
      return
    given = x_api_key or (authorization or '').removeprefix('Bearer ').strip()
    if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
      raise HttpError(401, 'missing or wrong API key: send it in the X-API-Key header')

  refusals = {status: {'model': ErrorOut} for status in (400, 401, 413, 415, 422, 503)}
  photo_types = {'multipart/form-data': {'schema': {
      'type': 'object', 'required': ['file'], 'properties': {'file': {
          'type': 'array', 'minItems': 1, 'maxItems': settings.max_images,
          'items': {'type': 'string', 'format': 'binary', 'minLength': 1}}}}}}
  photo_types.update({t: {'schema': {'type': 'string', 'format': 'binary', 'minLength': 1}}
                      for t in ('image/jpeg', 'image/png', 'application/octet-stream')})

  @app.post('/v1/predict', response_model=PredictOut, responses=refusals,
            dependencies=[fastapi.Depends(check_key)],
            openapi_extra={'requestBody': {'required': True, 'content': photo_types}})
  async def predict(request: fastapi.Request, detect: bool = fastapi.Query(
      True, description='false: each photo is one face, already cropped.')) -> dict[str, Any]:
    """Each face in each photo sent, largest first, with its emotion and all seven
    probabilities."""
    start = time.perf_counter()
    try:
      async with asyncio.timeout(settings.timeout):
        answer = await service.predict(await _photos(request, settings), detect)
    except TimeoutError:
      raise HttpError(503, f'no answer within {settings.timeout:g} s: the server is busy; try '
                           'again') from None
    answer['milliseconds'] = round(1000 * (time.perf_counter() - start), 2)
    return answer

  @app.get('/v1/model', response_model=ModelOut, responses={401: {'model': ErrorOut}},
           dependencies=[fastapi.Depends(check_key)])
  async def describe() -> dict[str, Any]:
    """The model that answers: its name, labels, input and measured accuracy."""
    return model

  @app.get('/healthz')
  async def healthz() -> dict[str, str]:
    return {'status': 'ok'}

  @app.get('/', include_in_schema=False)
  async def page() -> responses.FileResponse:
    return responses.FileResponse(WEB_DIR / 'index.html')

  app.mount('/web', staticfiles.StaticFiles(directory=WEB_DIR), name='web')
  return app
