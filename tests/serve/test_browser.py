"""medjax.serve as a user meets it: a frozen-feature run on real chest X-rays, served by the
real command on a free port, queried over HTTP and through headless Chromium.

The browser is Debian's ``chromium`` driven by Selenium through ``chromium-driver``
(``.ci/run`` installs both); the test skips, saying so, only where they are absent.
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from medjax.features import pipeline
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # A real-data run, a server subprocess and a browser.
K = 6


@pytest.fixture(scope="module")
def chest_run(shared_data, tfds_dir, tmp_path_factory):
  """System 5's smoke config (avgpool) on the first 96 training and 24 test chest X-rays."""
  from configs import vlad
  config = vlad.get_config("smoke,dataset=chest_xray,aggregation=avgpool,scale=112")
  config.data.manual_dir = str(shared_data)
  config.data.tfds_dir = str(tfds_dir)
  config.data.train_split = "train[:96]"
  config.data.test_split = "test[:24]"
  workdir = tmp_path_factory.mktemp("chest_run")
  pipeline.train_and_evaluate(config, workdir)
  return workdir


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(chest_run, tmp_path_factory):
  port = free_port()
  log = tmp_path_factory.mktemp("server") / "server.log"
  with log.open("w") as out:
    proc = subprocess.Popen(
        [sys.executable, "-m", "medjax.serve", f"--workdir={chest_run}", f"--port={port}",
         "--max_upload_mb=1"], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 240
  while True:
    try:
      urllib.request.urlopen(f"{url}/api/health", timeout=2)
      break
    except OSError:
      assert proc.poll() is None, log.read_text()[-3000:]
      assert time.time() < deadline, "server not up after 240 s"
      time.sleep(0.5)
  yield url, port, log
  proc.terminate()
  proc.wait(timeout=30)


def query_image(shared_data) -> Path:
  return sorted((shared_data / "chest_xray" / "test" / "PNEUMONIA").glob("*.jpeg"))[-1]


def post(url: str, fields: dict, files: dict) -> tuple[int, dict]:
  """A multipart POST with the standard library (what any client sends)."""
  boundary = uuid.uuid4().hex
  parts = []
  for name, value in fields.items():
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 f"{value}\r\n".encode())
  for name, (filename, data) in files.items():
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + data + b"\r\n")
  body = b"".join(parts) + f"--{boundary}--\r\n".encode()
  request = urllib.request.Request(f"{url}/api/query", data=body, method="POST", headers={
      "Content-Type": f"multipart/form-data; boundary={boundary}"})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read() or b"{}")


def raw_get(port: int, path: str) -> int:
  """GET with the path sent byte for byte (no client-side ``..`` normalisation)."""
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  conn.request("GET", path)
  status = conn.getresponse().status
  conn.close()
  return status


def oversize_post(port: int) -> int:
  """Declares a 2 MB body, sends its first kilobyte, and reads the answer: the server must
  refuse on the header alone, without waiting for (or storing) the rest."""
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  conn.putrequest("POST", "/api/query")
  conn.putheader("Content-Type", "multipart/form-data; boundary=x")
  conn.putheader("Content-Length", str(2 << 20))
  conn.endheaders()
  conn.send(b"--x\r\n" + b"\0" * 1024)
  status = conn.getresponse().status
  conn.close()
  return status


def test_real_server_answers_and_refuses_without_falling_over(server, shared_data, chest_run):
  url, port, log = server
  health = json.loads(urllib.request.urlopen(f"{url}/api/health").read())
  assert health["status"] == "ok" and health["index_size"] == 96 and health["search"] == "exact"
  image = query_image(shared_data).read_bytes()
  status, answer = post(url, {"k": str(K)}, {"image": ("x.jpeg", image)})
  assert status == 200, answer
  assert len(answer["neighbours"]) == K
  assert {n["label"] for n in answer["neighbours"]} <= {"NORMAL", "PNEUMONIA"}
  assert answer["prediction"]["label"] in ("NORMAL", "PNEUMONIA")
  for n in answer["neighbours"]:
    with urllib.request.urlopen(url + n["thumbnail"]) as thumb:
      assert thumb.headers["Content-Type"] == "image/jpeg" and thumb.read()[:2] == b"\xff\xd8"
  assert post(url, {}, {"image": ("notes.txt", b"not an image at all")})[0] == 400
  assert raw_get(port, "/api/health") == 200
  assert oversize_post(port) == 413
  assert raw_get(port, "/api/health") == 200
  for path in ("/thumbnails/../results.json", "/thumbnails/%2e%2e/results.json",
               "/thumbnails/..%2f..%2fetc%2fpasswd", "/static/../serve.py"):
    assert raw_get(port, path) == 404, path
  assert raw_get(port, "/api/health") == 200
  assert "POST /api/query 413" in log.read_text()  # Every request is logged.


def test_headless_chromium_shows_k_thumbnails_and_a_prediction(server, shared_data, tmp_path):
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  driver_path = shutil.which("chromedriver")
  if not (chromium and driver_path):
    pytest.skip("headless Chromium needs Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver; .ci/run does this as root)")
  pytest.importorskip("selenium", reason="pip install selenium (.ci/run does) for the browser test")
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000"):
    options.add_argument(arg)
  browser = webdriver.Chrome(service=Service(driver_path), options=options)
  try:
    url, _, _ = server
    browser.get(url)
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys(str(K))
    browser.find_element(By.ID, "file").send_keys(str(query_image(shared_data)))
    loaded = ("return [...document.querySelectorAll('#neighbours .neighbour img')]"
              ".filter(i => i.complete && i.naturalWidth > 0).length")
    WebDriverWait(browser, 180).until(lambda b: b.execute_script(loaded) == K)
    prediction = browser.find_element(By.ID, "predicted-label").text
    assert prediction in ("NORMAL", "PNEUMONIA")
    captions = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#neighbours figcaption")]
    assert len(captions) == K and all(("NORMAL" in c) or ("PNEUMONIA" in c) for c in captions)
    screenshot = tmp_path / "retrieval_page.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    browser.find_element(By.ID, "tab-metrics").click()
    WebDriverWait(browser, 30).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#pr-curve polyline"))
    assert "mAP" in browser.find_element(By.ID, "metrics-table").text
    browser.save_screenshot(str(tmp_path / "retrieval_metrics.png"))
  finally:
    browser.quit()


def test_retrieve_prints_ten_labelled_neighbours_of_a_chest_xray(chest_run, shared_data):
  results = json.loads((chest_run / "results.json").read_text())
  assert 0 < results["retrieval/mAP"] <= 1 and 0 <= results["retrieval/P@10"] <= 1
  result = subprocess.run(
      [sys.executable, "-m", "medjax.retrieve", f"--workdir={chest_run}",
       str(query_image(shared_data)), "--k=10"], cwd=REPO_ROOT, capture_output=True,
      text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [line.split("\t") for line in result.stdout.splitlines() if line[:1].isdigit()]
  assert len(rows) == 10 and all(r[2] in ("NORMAL", "PNEUMONIA") for r in rows)
