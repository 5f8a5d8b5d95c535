"""A web page and JSON API to query a finished run's retrieval index by example.

  python -m medjax.serve --workdir=W [--host=127.0.0.1] [--port=8080] [--max_upload_mb=10]

The page (plain HTML/JS in ``medjax/static/``, no build step) takes a dropped or picked
image and shows the k most similar training images with label and distance, the run's
prediction with its scores and, on request, the explanation overlay; a second view shows
the run's retrieval metrics and PR curve. The API:

* ``GET /api/health`` -> ``{"status": "ok", "index_size": N, "dims", "search", ...}``;
* ``POST /api/query``, multipart field ``image`` (optional ``k``, ``explain`` =
  ``occlusion`` | ``gradcam``) -> ``{"neighbours": [{"id", "name", "label", "distance",
  "thumbnail"}], "prediction": {"label", "scores"}, ["explanation": {"method", "image"}]}``;
* ``GET /thumbnails/<id>`` -> JPEG of indexed image ``id`` (an integer: never a path);
* ``GET /api/metrics`` -> the run's retrieval metrics (P@k, mAP, PR curve, intervals).

It binds to 127.0.0.1 unless told otherwise. Uploads over the limit get 413 (checked on
``Content-Length`` and on the bytes actually received), anything that does not decode as
an image 400; each request is logged with its status and time.
"""
import errno
import logging
import socket
import time
from pathlib import Path

from absl import flags
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from medjax import cli

FLAGS = flags.FLAGS
STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 10 << 20
log = logging.getLogger("medjax.serve")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Workdir of a finished run.", required=True,
                      flag_values=fv)
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0 exposes the server).",
                      flag_values=fv)
  flags.DEFINE_integer("port", 8080, "Port to listen on (0: any free one).", lower_bound=0,
                       upper_bound=65535, flag_values=fv)
  flags.DEFINE_float("max_upload_mb", MAX_UPLOAD_BYTES / (1 << 20), "Largest upload accepted.",
                     flag_values=fv)


class TooLarge(HTTPException):
  def __init__(self, limit: int):
    super().__init__(413, f"upload larger than the limit of {limit} bytes")


class LimitAndLog:
  """ASGI middleware: refuses bodies over ``max_bytes`` (declared or streamed) with 413 and
  logs every request's method, path, status and time."""

  def __init__(self, app, max_bytes: int):
    self.app, self.max_bytes = app, max_bytes

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    start, status, seen = time.perf_counter(), [0], [0]

    async def send_logged(message):
      if message["type"] == "http.response.start":
        status[0] = message["status"]
      await send(message)

    async def limited():
      message = await receive()
      if message["type"] == "http.request":
        seen[0] += len(message.get("body", b""))
        if seen[0] > self.max_bytes:
          raise TooLarge(self.max_bytes)
      return message

    try:
      declared = dict(scope["headers"]).get(b"content-length")
      if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
        await _error(413, TooLarge(self.max_bytes).detail)(scope, receive, send_logged)
      else:
        try:
          await self.app(scope, limited, send_logged)
        except TooLarge as e:
          if status[0]:
            raise
          await _error(413, e.detail)(scope, receive, send_logged)
    finally:
      log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status[0],
               1000 * (time.perf_counter() - start))


def _json_safe(value):
  """NaN (a measure no query defines) as null: JSON has no NaN."""
  if isinstance(value, float) and value != value:
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_json_safe(v) for v in value]
  return value


def _error(status: int, detail: str) -> JSONResponse:
  return JSONResponse({"error": detail}, status_code=status)


def create_app(service, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Starlette:
  """The web app over a :class:`medjax.retrieval.service.Service`."""
  from medjax.retrieval.service import BadImage

  async def page(request):
    return FileResponse(STATIC / "index.html")

  async def health(request):
    return JSONResponse(service.health())

  async def metrics(request):
    return JSONResponse(_json_safe(service.metrics))

  async def query(request: Request):
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
      return _error(400, "send the image as the multipart file field 'image'")
    try:
      k = int(form.get("k") or 10)
    except ValueError:
      return _error(400, f"k={form.get('k')!r} is not an integer")
    data = await upload.read()
    try:
      answer = await run_in_threadpool(service.query, data, k, str(form.get("explain") or ""))
    except BadImage as e:
      return _error(400, str(e))
    except ValueError as e:
      return _error(400, str(e))
    return JSONResponse(answer)

  async def thumbnail(request):
    data = await run_in_threadpool(service.thumbnail, request.path_params["id"])
    if data is None:
      return _error(404, "no thumbnail for this id")
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "max-age=3600"})

  async def not_found(request, exc):
    return _error(exc.status_code, exc.detail)

  routes = [Route("/", page), Route("/api/health", health), Route("/api/metrics", metrics),
            Route("/api/query", query, methods=["POST"]),
            Route("/thumbnails/{id:int}", thumbnail),
            Mount("/static", StaticFiles(directory=STATIC), name="static")]
  return Starlette(routes=routes, exception_handlers={HTTPException: not_found},
                   middleware=[Middleware(LimitAndLog, max_bytes=max_upload_bytes)])


def listen(host: str, port: int) -> socket.socket:
  """A socket bound to ``host:port``, so that a port in use is one line before any URL is
  announced (uvicorn would report it after)."""
  sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # As uvicorn binds.
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    if e.errno == errno.EADDRINUSE:
      raise cli.UserError(f"--port={port}: port {port} is in use on {host}; give another"
                          ) from None
    raise cli.UserError(f"--host={host} --port={port}: cannot listen there ({e})") from None
  return sock


def main(argv):
  del argv
  import uvicorn

  from medjax.data import tf_runtime
  tf_runtime.configure()
  from medjax.retrieval import service
  if FLAGS.max_upload_mb <= 0:
    raise cli.UserError(f"--max_upload_mb={FLAGS.max_upload_mb} must be positive")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  log.setLevel(logging.INFO)
  app = create_app(service.from_run(FLAGS.workdir), int(FLAGS.max_upload_mb * (1 << 20)))
  sock = listen(FLAGS.host, FLAGS.port)
  port = sock.getsockname()[1]
  log.info("serving %s on http://%s:%d/", FLAGS.workdir, FLAGS.host, port)
  print(f"medjax.serve: http://{FLAGS.host}:{port}/", flush=True)
  uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
  cli.run(main, "medjax.serve", define_flags)
