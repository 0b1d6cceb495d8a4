// The fer_flax page: photos and the camera, sent to this server's /v1/predict; no other server.
'use strict';

const $ = (selector) => document.querySelector(selector);
let labels = ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral'];

function say(text) {
  $('#status').textContent = text;
}

function percent(value) {
  return `${Math.round(100 * value)}%`;
}

// fetch with the API key, if one was given; the server's one-line error becomes the Error.
async function api(path, options = {}) {
  const key = $('#key').value || sessionStorage.getItem('fer_flax_key') || '';
  const headers = Object.assign({}, options.headers, key ? {'X-API-Key': key} : {});
  const response = await fetch(path, Object.assign({}, options, {headers}));
  const body = await response.json().catch(() => ({error: response.statusText}));
  if (response.status === 401) {
    $('#key-field').hidden = false;
  }
  if (!response.ok) {
    const error = new Error(body.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  if (key) {
    sessionStorage.setItem('fer_flax_key', key);
  }
  return body;
}

// How the server classifies each face (GET /v1/model's tta).
const VIEWS = {flip: ', each averaged with its mirror', tencrop: ', each averaged over ten crops'};

async function describeModel() {
  try {
    const model = await api('/v1/model');
    labels = model.labels;
    const accuracy = model.accuracy.value === null ? '' :
      `, ${(100 * model.accuracy.value).toFixed(2)}% on ${model.accuracy.split} single view`;
    $('#model').textContent = `Model: ${model.name} (${model.architecture}, ` +
      `${model.parameters.toLocaleString('en')} parameters${accuracy}); ` +
      `faces found by ${model.detector}${VIEWS[model.tta] ?? ''}.`;
  } catch (error) {
    $('#model').textContent = `Model: ${error.message}`;
  }
}

// Boxes and labels over a photo or the video, in percent of its size, so they follow its scaling.
function drawBoxes(frame, faces, width, height) {
  frame.querySelectorAll('.box').forEach((box) => box.remove());
  for (const face of faces) {
    const [x, y, w, h] = face.box || [0, 0, width, height];
    const box = document.createElement('div');
    box.className = 'box';
    Object.assign(box.style, {
      left: `${100 * x / width}%`, top: `${100 * y / height}%`,
      width: `${100 * w / width}%`, height: `${100 * h / height}%`,
    });
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = `${face.emotion} ${percent(face.confidence)}`;
    box.append(label);
    frame.append(box);
  }
}

// Each face's seven probabilities as bars.
function drawBars(container, faces) {
  container.replaceChildren(...faces.map((face, i) => {
    const block = document.createElement('div');
    block.className = 'face';
    const title = document.createElement('h3');
    title.textContent = `Face ${i + 1}: ${face.emotion} ${percent(face.confidence)}`;
    block.append(title);
    for (const emotion of labels) {
      const value = face.probabilities[emotion];
      const row = document.createElement('div');
      row.className = emotion === face.emotion ? 'bar top' : 'bar';
      const name = document.createElement('span');
      name.textContent = emotion;
      const track = document.createElement('span');
      track.className = 'track';
      const fill = document.createElement('span');
      fill.className = 'fill';
      fill.style.width = percent(value);
      track.append(fill);
      const number = document.createElement('span');
      number.textContent = value.toFixed(3);
      row.append(name, track, number);
      block.append(row);
    }
    return block;
  }));
}

async function showPhoto(file) {
  const node = $('#result-template').content.firstElementChild.cloneNode(true);
  node.querySelector('h2').textContent = file.name;
  node.querySelector('img').src = URL.createObjectURL(file);
  $('#results').prepend(node);
  const form = new FormData();
  form.append('file', file, file.name);
  try {
    const detect = !$('#no-detect').checked;
    const answer = await api(`/v1/predict?detect=${detect}`, {method: 'POST', body: form});
    const image = answer.images[0];
    drawBoxes(node.querySelector('.frame'), image.faces, image.width, image.height);
    drawBars(node.querySelector('.faces'), image.faces);
    return image.faces.length;
  } catch (error) {
    const message = node.querySelector('.error');
    message.hidden = false;
    message.textContent = error.message;
    return 0;
  }
}

async function showPhotos(files) {
  if (!files.length) {
    return;
  }
  say(`Sending ${files.length} photo(s)...`);
  const counts = await Promise.all([...files].map(showPhoto));
  say(`${files.length} photo(s), ${counts.reduce((a, b) => a + b, 0)} face(s).`);
}

// The camera: a few frames a second; faces tracked from frame to frame and each track's
// probabilities averaged over the last `smooth` seconds, as python -m fer_flax.predict --smooth
// does for videos (fer_flax/serve/video.py: the same overlap and memory).
const MIN_OVERLAP = 0.3;
const TRACK_MEMORY_SECONDS = 1.0;
const camera = {stream: null, running: false, tracks: new Map(), nextTrack: 0};

function overlap(a, b) {
  const width = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
  const height = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
  const shared = Math.max(0, width) * Math.max(0, height);
  return shared / (a[2] * a[3] + b[2] * b[3] - shared);
}

function smoothed(faces, now) {
  const seconds = Math.max(0, Number($('#smooth').value) || 0);
  const live = new Map([...camera.tracks].filter(([, t]) => now - t.seen <= TRACK_MEMORY_SECONDS));
  const out = faces.map((face) => {
    let best = null;
    let bestOverlap = MIN_OVERLAP;
    for (const [id, track] of live) {
      const value = overlap(face.box, track.box);
      if (value >= bestOverlap) {
        best = id;
        bestOverlap = value;
      }
    }
    if (best === null) {
      best = camera.nextTrack++;
    }
    live.delete(best);
    const track = camera.tracks.get(best) || {history: []};
    track.box = face.box;
    track.seen = now;
    track.history.push([now, face.probabilities]);
    track.history = track.history.filter(([time]) => time >= now - seconds);
    camera.tracks.set(best, track);
    const probabilities = Object.fromEntries(labels.map((emotion) => [emotion,
      track.history.reduce((sum, [, p]) => sum + p[emotion], 0) / track.history.length]));
    const emotion = labels.reduce((a, b) => (probabilities[b] > probabilities[a] ? b : a));
    return Object.assign({}, face, {probabilities, emotion, confidence: probabilities[emotion]});
  });
  for (const [id, track] of camera.tracks) {
    if (now - track.seen > TRACK_MEMORY_SECONDS) {
      camera.tracks.delete(id);
    }
  }
  return out;
}

async function cameraLoop() {
  const video = $('#video');
  const canvas = document.createElement('canvas');
  while (camera.running) {
    const started = performance.now();
    if (video.videoWidth) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext('2d').drawImage(video, 0, 0);
      const frame = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.85));
      let faces = [];
      try {
        const answer = await api('/v1/predict', {
          method: 'POST', headers: {'Content-Type': 'image/jpeg'}, body: frame});
        faces = answer.images[0].faces;
        say(`Camera: ${faces.length} face(s), ${answer.milliseconds} ms in the server.`);
      } catch (error) {
        say(error.status === 422 ? 'Camera: no face.' : `Camera: ${error.message}`);
      }
      if (!camera.running) {
        break;
      }
      faces = smoothed(faces, started / 1000);
      drawBoxes($('#camera-frame'), faces, canvas.width, canvas.height);
      drawBars($('#camera-faces'), faces);
    }
    const fps = Math.min(15, Math.max(0.5, Number($('#fps').value) || 4));
    const wait = 1000 / fps - (performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
  }
}

async function startCamera() {
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
  } catch (error) {
    say(`Camera: ${error.message}`);
    return;
  }
  const video = $('#video');
  video.srcObject = camera.stream;
  await video.play();
  $('#camera').hidden = false;
  $('#camera-button').textContent = 'Stop camera';
  camera.running = true;
  camera.tracks.clear();
  cameraLoop();
}

function stopCamera() {
  camera.running = false;
  camera.stream.getTracks().forEach((track) => track.stop());
  $('#camera').hidden = true;
  $('#camera-button').textContent = 'Start camera';
  say('');
}

$('#photos').addEventListener('change', (event) => {
  showPhotos([...event.target.files]);  // A copy: clearing the input empties its FileList.
  event.target.value = '';
});
$('#camera-button').addEventListener('click', () => {
  camera.running ? stopCamera() : startCamera();
});
document.addEventListener('dragover', (event) => {
  event.preventDefault();
  $('#drop').classList.add('over');
});
document.addEventListener('dragleave', () => $('#drop').classList.remove('over'));
document.addEventListener('drop', (event) => {
  event.preventDefault();
  $('#drop').classList.remove('over');
  showPhotos([...event.dataTransfer.files]);
});
$('#key').addEventListener('change', describeModel);
describeModel();
