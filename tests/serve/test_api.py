"""The web API through Starlette's test client, over a stand-in service (no trained run):
good image, non-image 400, oversize 413, traversal 404, concurrent queries, and the server
still answering after each."""
import io
import threading

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from medjax import serve
from medjax.retrieval import index as index_lib
from medjax.retrieval import service as service_lib

SIZE = 8


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array.astype(np.uint8)).save(buffer, format=fmt)
  return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
  """The stand-in embedding: the image shrunk to SIZE x SIZE grey levels."""
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("L").resize((SIZE, SIZE)), np.float32).ravel() + 1.0


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
  """Twelve images on disk, dark ones class 0 and bright ones class 1, indexed."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  paths, vectors, labels = [], [], []
  for i in range(12):
    label = i % 2
    array = rng.integers(0, 60, (32, 32)) + 150 * label
    array[: 4 + i, :] += 40  # Every image different.
    path = root / f"img_{i:02d}.png"
    path.write_bytes(encode(np.clip(array, 0, 255)))
    paths.append(path)
    vectors.append(pixels(path.read_bytes()))
    labels.append(label)
  index = index_lib.create(tmp_path_factory.mktemp("index"), np.stack(vectors), labels,
                           [p.name for p in paths], [str(p) for p in paths], ("dark", "bright"))
  return index, paths


@pytest.fixture(scope="module")
def client(indexed):
  index, _ = indexed
  calls = {"concurrent": 0, "max": 0}
  guard = threading.Lock()

  def embed(data):
    with guard:
      calls["concurrent"] += 1
      calls["max"] = max(calls["max"], calls["concurrent"])
    try:
      return pixels(data)
    finally:
      with guard:
        calls["concurrent"] -= 1

  def predict(data):
    bright = pixels(data).mean() / 255
    return np.array([1 - bright, bright])

  def explain(data, method):
    return encode(np.zeros((4, 4)))

  service = service_lib.Service(index=index, embed=embed, predict=predict,
                                class_names=("dark", "bright"), explain=explain,
                                explain_methods=("occlusion",),
                                metrics={"mAP": 0.5, "P@1/ci95_low": float("nan")},
                                name="stand-in")
  app = serve.create_app(service, max_upload_bytes=20_000)
  with TestClient(app) as c:
    c.calls = calls
    yield c


def assert_still_serving(client):
  assert client.get("/api/health").json()["status"] == "ok"


def test_health_and_page(client):
  health = client.get("/api/health").json()
  assert health == {**health, "status": "ok", "index_size": 12, "search": "exact",
                    "classes": ["dark", "bright"]}
  page = client.get("/")
  assert page.status_code == 200 and 'id="neighbours"' in page.text
  assert client.get("/static/app.js").status_code == 200
  assert client.get("/api/metrics").json() == {"mAP": 0.5, "P@1/ci95_low": None}


def test_query_returns_k_labelled_neighbours_with_loadable_thumbnails(client, indexed):
  _, paths = indexed
  data = paths[3].read_bytes()  # A bright image: its own copy comes first.
  response = client.post("/api/query", files={"image": ("q.png", data, "image/png")},
                         data={"k": "5", "explain": "occlusion"})
  assert response.status_code == 200, response.text
  answer = response.json()
  neighbours = answer["neighbours"]
  assert len(neighbours) == 5
  assert neighbours[0]["name"] == "img_03.png"
  assert neighbours[0]["distance"] == pytest.approx(0, abs=1e-3)
  assert [n["distance"] for n in neighbours] == sorted(n["distance"] for n in neighbours)
  assert all(n["label"] == "bright" for n in neighbours)
  assert answer["prediction"]["label"] == "bright"
  assert answer["explanation"]["image"].startswith("data:image/png;base64,")
  thumb = client.get(neighbours[0]["thumbnail"])
  assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
  with Image.open(io.BytesIO(thumb.content)) as image:
    assert max(image.size) <= service_lib.THUMBNAIL_PX


def test_non_image_is_400_and_server_keeps_serving(client):
  for payload in (b"just some text\n", b"\x89PNG\r\n\x1a\n truncated"):
    response = client.post("/api/query", files={"image": ("x.txt", payload, "text/plain")})
    assert response.status_code == 400 and "not an image" in response.json()["error"]
    assert_still_serving(client)
  assert client.post("/api/query", data={"k": "3"}).status_code == 400
  assert_still_serving(client)


def test_oversize_upload_is_413_by_header_and_by_stream(client):
  big = encode(np.random.default_rng(1).integers(0, 255, (200, 200)))
  assert len(big) > 20_000
  response = client.post("/api/query", files={"image": ("big.png", big, "image/png")})
  assert response.status_code == 413
  assert_still_serving(client)

  def chunks():  # Streamed without a Content-Length: the byte count must catch it.
    for start in range(0, len(big), 4096):
      yield big[start:start + 4096]
  response = client.post("/api/query", content=chunks(),
                         headers={"content-type": "multipart/form-data; boundary=xyz"})
  assert response.status_code == 413
  assert_still_serving(client)


@pytest.mark.parametrize("url", ["/thumbnails/../x", "/thumbnails/%2e%2e/%2e%2e/etc/passwd",
                                 "/thumbnails/..%2f..%2fetc%2fpasswd", "/thumbnails/-1",
                                 "/thumbnails/99", "/thumbnails/1.png", "/static/../serve.py",
                                 "/static/%2e%2e/serve.py"])
def test_traversal_and_unknown_ids_are_404(client, url):
  assert client.get(url).status_code == 404
  assert_still_serving(client)


def test_concurrent_queries_all_answer_one_model_call_at_a_time(client, indexed):
  _, paths = indexed
  results = [None] * 8

  def ask(i):
    data = paths[i].read_bytes()
    results[i] = client.post("/api/query", files={"image": ("q.png", data, "image/png")},
                             data={"k": "3"})

  threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert all(r.status_code == 200 for r in results)
  assert [r.json()["neighbours"][0]["name"] for r in results] == [p.name for p in paths[:8]]
  assert client.calls["max"] == 1  # The service's lock serialises the model calls.
  assert_still_serving(client)


def test_requests_are_logged(client, caplog):
  with caplog.at_level("INFO", logger="medjax.serve"):
    client.get("/api/health")
    client.get("/thumbnails/../x")
  lines = [r.getMessage() for r in caplog.records if r.name == "medjax.serve"]
  assert any(line.startswith("GET /api/health 200") for line in lines)
  assert any(" 404 " in line for line in lines)
