"""The HTTP API through FastAPI's test client: every field, several photos, every refusal (and
the next request still answered), the key, the description."""

from __future__ import annotations

import io
import json

import pytest
from fastapi import testclient
from PIL import Image

from fer_flax.data import fer2013
from fer_flax.serve import api, loading
from fer_flax.serve.predictor import DEFAULT_TTA, Predictor, predict_files
from tests import helpers


@pytest.fixture(scope='module')
def loaded():
  return loading.load_model('pretrained')


@pytest.fixture(scope='module')
def predictor(loaded):
  return Predictor.from_loaded(loaded, batch_size=16)


def _client(predictor, loaded, **settings) -> testclient.TestClient:
  model = api.model_description(loaded, 'pretrained', 'yunet', DEFAULT_TTA)
  return testclient.TestClient(api.create_app(predictor, model, api.Settings(**settings)))


@pytest.fixture(scope='module')
def client(predictor, loaded):
  with _client(predictor, loaded, max_batch=16) as client:
    yield client


def _predict_json(predictor, path) -> list[dict]:
  """What `python -m fer_flax.predict --json` prints for `path`, one dict a face."""
  from fer_flax import predict
  return list(predict._rows(predict_files(predictor, [path])))


def _close(got: dict, want: dict) -> None:
  assert got.keys() == want.keys()
  for key, value in want.items():
    if key == 'probabilities':
      assert got[key] == pytest.approx(value, abs=2e-4)
    elif isinstance(value, float):
      assert got[key] == pytest.approx(value, abs=2e-4)
    else:
      assert got[key] == value, key


def test_a_photo_gives_what_predict_json_gives(client, predictor):
  answer = client.post('/v1/predict', files={'file': (helpers.PHOTO.name,
                                                      helpers.PHOTO.read_bytes())})
  assert answer.status_code == 200
  body = answer.json()
  assert set(body) == {'images', 'milliseconds'} and body['milliseconds'] > 0
  [image] = body['images']
  assert (image['file'], image['width'], image['height']) == ('astronaut.jpg', 256, 256)
  want = _predict_json(predictor, helpers.PHOTO)
  assert len(image['faces']) == len(want) == 1
  for got, expected in zip(image['faces'], want, strict=True):
    _close(got, {**expected, 'file': 'astronaut.jpg'})
  face = image['faces'][0]
  assert face['emotion'] == 'happy' and list(face['probabilities']) == list(fer2013.EMOTIONS)


def test_several_photos_in_one_request_largest_faces_first(client, predictor, tmp_path):
  # Two faces in one photo: the astronaut, and the astronaut at half size beside her.
  photo = Image.open(helpers.PHOTO).convert('RGB')
  pair = Image.new('RGB', (384, 256), 'white')
  pair.paste(photo.resize((128, 128)), (0, 64))
  pair.paste(photo, (128, 0))
  pair.save(tmp_path / 'pair.png')
  files = [('file', ('pair.png', (tmp_path / 'pair.png').read_bytes())),
           ('file', ('astronaut.jpg', helpers.PHOTO.read_bytes()))]
  body = client.post('/v1/predict', files=files).json()
  assert [i['file'] for i in body['images']] == ['pair.png', 'astronaut.jpg']
  pair_faces = body['images'][0]['faces']
  assert len(pair_faces) == 2 and [f['face'] for f in pair_faces] == [0, 1]
  areas = [f['box'][2] * f['box'][3] for f in pair_faces]
  assert areas[0] > areas[1]
  for got, want in zip(pair_faces, _predict_json(predictor, tmp_path / 'pair.png'), strict=True):
    _close(got, {**want, 'file': 'pair.png'})


def test_a_raw_body_and_face_crops(client):
  body = client.post('/v1/predict', content=helpers.PHOTO.read_bytes(),
                     headers={'Content-Type': 'image/jpeg'}).json()
  assert body['images'][0]['file'] == 'body' and body['images'][0]['faces'][0]['box']
  crop = io.BytesIO()
  Image.open(helpers.PHOTO).crop((80, 30, 145, 95)).save(crop, 'PNG')
  whole = client.post('/v1/predict', params={'detect': 'false'}, content=crop.getvalue(),
                      headers={'Content-Type': 'image/png'}).json()['images'][0]['faces']
  assert len(whole) == 1 and whole[0]['box'] is None and whole[0]['score'] is None


@pytest.mark.parametrize('mode', ['I;16', 'CMYK'])
def test_sixteen_bit_and_cmyk_photos_are_read_right(client, mode):
  """Not refused: 16-bit grayscale is scaled to 8 bits (PIL alone clips it to white) and CMYK
  converted, so both give the 8-bit photo's answer."""
  fmt = 'PNG' if mode == 'I;16' else 'JPEG'
  plain = client.post('/v1/predict', content=helpers.photo_as(fmt, 'L'),
                      headers={'Content-Type': 'image/png'}).json()['images'][0]['faces'][0]
  odd = client.post('/v1/predict', content=helpers.photo_as(fmt, mode),
                    headers={'Content-Type': 'image/png'})
  assert odd.status_code == 200
  face = odd.json()['images'][0]['faces'][0]
  assert face['emotion'] == plain['emotion'] == 'happy'
  assert face['confidence'] == pytest.approx(plain['confidence'], abs=0.05)


@pytest.mark.parametrize('what,request_args,status,message', helpers.bad_requests(),
                         ids=[b[0] for b in helpers.bad_requests()])
def test_every_bad_request_is_refused_in_one_line_and_the_next_is_answered(
    client, what, request_args, status, message):
  answer = client.post('/v1/predict', **request_args)
  assert answer.status_code == status, (what, answer.text)
  assert answer.headers['content-type'] == 'application/json'
  assert list(answer.json()) == ['error'] and '\n' not in answer.json()['error']
  assert message in answer.json()['error'], answer.json()
  good = client.post('/v1/predict', files={'file': ('a.jpg', helpers.PHOTO.read_bytes())})
  assert good.status_code == 200 and good.json()['images'][0]['faces'][0]['emotion'] == 'happy'


def test_one_bad_photo_of_several_names_it(client):
  files = [('file', ('good.jpg', helpers.PHOTO.read_bytes())), ('file', ('bad.jpg', b'nope'))]
  answer = client.post('/v1/predict', files=files)
  assert answer.status_code == 415 and answer.json()['error'] == 'bad.jpg: not an image'


def test_too_many_photos(predictor, loaded):
  with _client(predictor, loaded, max_images=2) as client:
    files = [('file', (f'{i}.jpg', helpers.PHOTO.read_bytes())) for i in range(3)]
    answer = client.post('/v1/predict', files=files)
  assert answer.status_code == 400 and 'files' in answer.json()['error']


def test_a_request_past_its_time_is_refused(predictor, loaded):
  with _client(predictor, loaded, timeout=1e-4) as client:
    answer = client.post('/v1/predict', files={'file': ('a.jpg', helpers.PHOTO.read_bytes())})
  assert answer.status_code == 503 and 'busy' in answer.json()['error']


def test_unknown_paths_and_methods_answer_json(client):
  assert client.get('/v2/nothing').json() == {'error': 'Not Found'}
  wrong_method = client.get('/v1/predict')
  assert wrong_method.status_code == 405 and wrong_method.headers['allow'] == 'POST'
  assert wrong_method.json() == {'error': 'Method Not Allowed'}


def test_the_key_when_one_is_set(predictor, loaded):
  with _client(predictor, loaded, api_key='s3cret') as client:
    photo = {'file': ('a.jpg', helpers.PHOTO.read_bytes())}
    for headers in ({}, {'X-API-Key': 'wrong'}, {'Authorization': 'Bearer wrong'}):
      answer = client.post('/v1/predict', files=photo, headers=headers)
      assert answer.status_code == 401 and 'API key' in answer.json()['error']
      assert client.get('/v1/model', headers=headers).status_code == 401
    assert client.post('/v1/predict', files=photo, headers={'X-API-Key': 's3cret'}).is_success
    assert client.get('/v1/model', headers={'Authorization': 'Bearer s3cret'}).is_success
    assert client.get('/healthz').json() == {'status': 'ok'}
    assert client.get('/').is_success


def test_model_health_page_and_openapi(client):
  model = client.get('/v1/model').json()
  assert model['name'] == 'pretrained' and model['architecture'] == 'vgg'
  assert model['labels'] == list(fer2013.EMOTIONS) and model['parameters'] == 2_349_679
  assert model['input'] == {'height': 48, 'width': 48, 'channels': 1,
                            'color': 'grayscale, 0-255'}
  assert model['tta'] == 'flip' and 'single view' in model['accuracy']['measured']
  info = json.loads((loading.package.PRETRAINED_DIR / 'model.json').read_text())
  assert model['accuracy']['value'] == info['eval_accuracy_float32']
  assert model['accuracy']['split'] == 'public_test' and model['step'] == info['step']
  assert client.get('/healthz').json() == {'status': 'ok'}
  page = client.get('/')
  assert page.is_success and '<script src="/web/app.js">' in page.text
  assert client.get('/web/app.js').is_success and client.get('/web/style.css').is_success
  spec = client.get('/openapi.json').json()
  assert set(spec['paths']) == {'/v1/predict', '/v1/model', '/healthz'}
  content = spec['paths']['/v1/predict']['post']['requestBody']['content']
  assert {'multipart/form-data', 'image/jpeg'} <= set(content)
  assert content['multipart/form-data']['schema']['properties']['file']['maxItems'] == 16


def test_concurrent_requests_share_batches(predictor, loaded):
  """Sixteen requests at once: their faces go to the model in fewer calls than requests, and each
  gets its own answer."""
  import concurrent.futures

  with _client(predictor, loaded, batch_wait=0.05, max_batch=16) as client:
    batcher = client.app.state.service.batcher
    photo = {'file': ('a.jpg', helpers.PHOTO.read_bytes())}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      answers = list(pool.map(lambda _: client.post('/v1/predict', files=photo), range(16)))
  assert all(a.json()['images'][0]['faces'][0]['emotion'] == 'happy' for a in answers)
  assert batcher.faces == 16 and batcher.model_calls < 16
