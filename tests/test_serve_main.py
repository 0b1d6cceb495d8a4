"""`python -m fer_flax.serve` for real, on localhost: under load (good and bad requests from
sixteen clients), the docs' curl and Python examples, and its command line."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys

import httpx2
import pytest

from tests import helpers


def test_a_bounded_load_of_good_and_bad_requests(served):
  """500 requests from 16 clients, one in ten bad: every good one answered right, every bad one
  refused with its status, none lost, the server still up."""
  url, process = served
  bad = [b for b in helpers.bad_requests() if b[0] != 'too large a body'] * 5
  bad += [b for b in helpers.bad_requests() if b[0] == 'too large a body']
  photo = helpers.PHOTO.read_bytes()
  plan = [bad[i // 10 % len(bad)] if i % 10 == 9 else None for i in range(500)]

  def send(kind):
    with httpx2.Client(base_url=url, timeout=120) as client:
      if kind is None:
        answer = client.post('/v1/predict', files={'file': ('a.jpg', photo)})
        return answer.status_code, answer.json()
      answer = client.post('/v1/predict', **kind[1])
      return answer.status_code, answer.json()

  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    answers = list(pool.map(send, plan))
  assert len(answers) == 500
  for kind, (status, body) in zip(plan, answers, strict=True):
    if kind is None:
      assert status == 200 and body['images'][0]['faces'][0]['emotion'] == 'happy', body
    else:
      assert status == kind[2] and kind[3] in body['error'], (kind[0], status, body)
  assert httpx2.get(f'{url}/healthz').json() == {'status': 'ok'} and process.poll() is None


def _blocks(language: str) -> list[str]:
  text = (helpers.REPO / 'docs' / 'serve.md').read_text()
  return re.findall(rf'```{language}\n(.*?)```', text, re.DOTALL)


def test_the_docs_examples_run(served):
  url, _ = served
  commands = _blocks('sh')
  assert len(commands) >= 3
  for command in commands:
    result = subprocess.run(['bash', '-euo', 'pipefail', '-c',
                             command.replace('http://127.0.0.1:8000', url)],
                            cwd=helpers.REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout, (command, result.stderr)
    assert '"error"' not in result.stdout, (command, result.stdout)
  [python] = _blocks('python')
  result = subprocess.run([sys.executable, '-c', python.replace('http://127.0.0.1:8000', url)],
                          cwd=helpers.REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and 'happy' in result.stdout, result.stderr


@pytest.mark.parametrize('args,message', [
    ([], 'give exactly one of --model'),
    (['--model=pretrained', '--port=PORT'], 'cannot listen on 127.0.0.1:PORT (Address already in '
                                            'use): pass another --port, or --host'),
    (['--model=pretrained', 'photo.jpg'], "unexpected arguments ['photo.jpg']"),
])
def test_the_command_refuses_in_one_line(served, args, message):
  port = served[0].rsplit(':', 1)[1]  # a port the test server holds
  args = [a.replace('PORT', port) for a in args]
  result = subprocess.run([sys.executable, '-m', 'fer_flax.serve', *args], cwd=helpers.REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'fer_flax: error: {message.replace("PORT", port)}'), result.stderr
