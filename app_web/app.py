"""The web app factory: ``create_app(config)`` builds one Flask app per settings
object, so tests and each gunicorn worker build their own.

Routes keep the lab's names: ``GET /`` (the page), ``POST /predict`` (multipart
``file``; an HTML fragment for the page, JSON on ``Accept: application/json``),
``GET /test`` (the bundled photo); plus ``POST /`` (the same form without
JavaScript), ``POST /feedback`` (the person's right / wrong, docs/feedback.md),
``/review`` (the operator's page), ``GET /healthz`` and ``GET /metrics``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request, url_for
from flask.wrappers import Request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app_web import feedback_metrics, metrics
from app_web.api_client import ApiClient, Prediction, UpstreamError
from app_web.feedback import FeedbackError, FeedbackService
from app_web.review import register_review
from app_web.settings import PACKAGE_DIR, WebSettings
from app_web.uploads import NotAnImage, UploadStore, sniff_image
from gourmetgram.host_header import HostCheckWSGI

log = logging.getLogger("app_web")

CLIENT_COOKIE = "gg_client"
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
COOKIE_MAX_AGE = 180 * 24 * 3600
# Room for the multipart framing around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class WebError(Exception):
    """A failure shown to the person: a title, a sentence, and the HTTP status."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class InMemoryRequest(Request):
    """Uploads stay in memory (their size is capped by MAX_CONTENT_LENGTH): nothing is
    written to disk, under the client's file name or any other."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


def _size_text(n: int) -> str:
    if n < 1_000_000:
        return f"{max(1, round(n / 1000))} kB"
    return f"{n / 1_000_000:.1f}".rstrip("0").rstrip(".") + " MB"


def _asset_version() -> str:
    """Changes when a static file changes, so browsers may cache assets for a day."""
    h = hashlib.sha256()
    for p in sorted((PACKAGE_DIR / "static").iterdir()):
        if p.suffix in (".css", ".js", ".svg"):
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def create_app(config: WebSettings | Mapping[str, Any] | None = None) -> Flask:
    settings = config if isinstance(config, WebSettings) else WebSettings(**(config or {}))
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.wsgi_app = HostCheckWSGI(app.wsgi_app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        MAX_FORM_PARTS=20,
        SEND_FILE_MAX_AGE_DEFAULT=24 * 3600,
        JSON_SORT_KEYS=False,
    )
    app.extensions["gourmetgram_settings"] = settings
    client = ApiClient(
        settings.api_url, settings.api_connect_timeout, settings.api_timeout, settings.api_retries
    )
    store = UploadStore(settings.upload_dir, settings.upload_keep) if settings.upload_dir else None
    feedback = FeedbackService(settings)
    test_photo = settings.test_image.read_bytes()
    test_photo_is_bundled = settings.test_image.resolve().parent == PACKAGE_DIR / "static"
    asset_version = _asset_version()
    limit_text = _size_text(settings.max_upload_bytes)

    @app.context_processor
    def _page_context():
        return {
            "asset": lambda name: url_for("static", filename=name, v=asset_version),
            "max_upload_bytes": settings.max_upload_bytes,
            "limit_text": limit_text,
            "keeps_uploads": store is not None,
            "samples_for_review": feedback.samples,
            "classes": settings.classes,
        }

    # ---- request bookkeeping: metrics, the sticky client id, security headers ----

    @app.before_request
    def _start():
        g.start = time.perf_counter()
        g.mode = "page"
        cid = request.cookies.get(CLIENT_COOKIE, "")
        g.client_id = cid if CLIENT_ID.match(cid) else None
        g.new_client_id = None
        if settings.sticky_client and g.client_id is None:
            g.client_id = g.new_client_id = secrets.token_urlsafe(16)

    @app.after_request
    def _finish(resp: Response) -> Response:
        if settings.sticky_client and g.get("new_client_id"):
            resp.set_cookie(
                CLIENT_COOKIE, g.new_client_id, max_age=COOKIE_MAX_AGE, httponly=True,
                samesite="Lax", secure=settings.cookie_secure,
            )
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if request.endpoint != "static":
            resp.headers.setdefault("Cache-Control", "no-store")
        route = request.url_rule.rule if request.url_rule is not None else "none"
        start = g.get("start")
        if start is not None:
            metrics.DURATION.labels(route).observe(time.perf_counter() - start)
        method = metrics.method_label(request.method)
        metrics.REQUESTS.labels(route, method, f"{resp.status_code // 100}xx").inc()
        return resp

    # ---- rendering: one place decides between JSON, the fragment and the page ----

    def wants_json() -> bool:
        best = request.accept_mimetypes.best_match(["text/html", "application/json"])
        return best == "application/json"

    def answer(prediction: Prediction | None = None, error: WebError | None = None,
               photo_url: str | None = None) -> Response:
        status = error.status if error else 200
        if wants_json():
            body = prediction.as_json() if prediction else {"detail": error.message}
            resp = jsonify(body)
        elif g.mode == "fragment":
            resp = Response(render_template("_result.html", p=prediction, error=error))
        else:
            resp = Response(
                render_template("index.html", p=prediction, error=error, photo_url=photo_url)
            )
        resp.status_code = status
        if prediction:
            resp.headers["X-Prediction-Id"] = prediction.prediction_id
            resp.headers["X-Model-Variant"] = prediction.variant
            resp.headers["X-Model-Version"] = prediction.model_version
        if status == 503:
            resp.headers["Retry-After"] = "30"
        if status == 413:
            resp.headers["Connection"] = "close"
        return resp

    @app.errorhandler(WebError)
    def _web_error(e: WebError):
        return answer(error=e)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e):
        size = request.content_length
        what = f"This upload is {_size_text(size)}" if size else "This upload is too large"
        return answer(error=WebError(
            413, "That photo is too large",
            f"{what}; photos up to {limit_text} are accepted. Try a smaller photo.",
        ))

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        titles = {404: "Page not found", 405: "Not allowed here"}
        messages = {
            404: "There is nothing at this address. The upload page is at /.",
            405: f"{request.method} is not accepted at {request.path}.",
        }
        return answer(error=WebError(
            e.code or 500, titles.get(e.code, e.name),
            messages.get(e.code, e.description or e.name),
        ))

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return answer(error=WebError(
            500, "Something went wrong", "Something went wrong on our side. Please try again.",
        ))

    # ---- the work ----

    def classify(data: bytes, fmt: str) -> Prediction:
        try:
            prediction = client.predict(data, g.client_id if settings.sticky_client else None)
        except UpstreamError as e:
            raise WebError(e.status, e.title, e.message) from None
        if store is not None:
            try:
                store.save(data, fmt, {**prediction.as_json(), "time": time.time()})
            except OSError as e:
                log.warning("could not keep upload in %s: %s", store.dir, e)
        try:
            feedback.record(prediction, data, fmt)
        except Exception as e:  # the answer is shown even when feedback cannot be kept
            log.warning("could not hold prediction %s for feedback: %s", prediction.prediction_id, e)
        return prediction

    def uploaded_photo() -> tuple[bytes, str]:
        size = request.content_length
        if size is not None and size > app.config["MAX_CONTENT_LENGTH"]:
            raise RequestEntityTooLarge()  # answered before any of the body is read
        f = request.files.get("file")
        if f is None:
            raise WebError(400, "No photo chosen",
                           "Choose a photo first: the upload had no file in it (form field 'file').")
        data = f.stream.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise WebError(413, "That photo is too large",
                           f"Photos up to {limit_text} are accepted. Try a smaller photo.")
        if not data:
            if not f.filename:
                raise WebError(400, "No photo chosen", "Choose a photo first, then press Submit.")
            raise WebError(400, "That file is empty", "The file you chose has no content.")
        try:
            fmt = sniff_image(data)
        except NotAnImage:
            raise WebError(
                415, "That file is not a photo",
                "We could not read that file as an image. Upload a JPEG, PNG, WebP or GIF photo.",
            ) from None
        return data, fmt

    @app.get("/")
    def index():
        return render_template("index.html", p=None, error=None, photo_url=None)

    @app.post("/")
    def index_post():
        """The form posted without JavaScript: the whole page, with the answer in it."""
        data, fmt = uploaded_photo()
        return answer(classify(data, fmt))

    @app.post("/predict")
    def predict():
        g.mode = "fragment"
        data, fmt = uploaded_photo()
        return answer(classify(data, fmt))

    @app.get("/test")
    def test():
        photo = url_for("static", filename="test-photo.jpeg") if test_photo_is_bundled else None
        return answer(classify(test_photo, sniff_image(test_photo)), photo_url=photo)

    @app.post("/feedback")
    def give_feedback():
        """The person's right / wrong (form or JSON); 201 once it is durably stored."""
        g.mode = "fragment" if request.headers.get("X-Fragment") == "1" else "page"
        body = request.get_json(silent=True) if request.is_json else request.form
        if not isinstance(body, Mapping):
            raise WebError(400, "No feedback", "Send prediction_id, verdict, label and note "
                                               "as a form or a JSON object.")
        try:
            row = feedback.verdict(body.get("prediction_id"), body.get("verdict"),
                                   body.get("label"), body.get("note"))
        except FeedbackError as e:
            raise WebError(e.status, "Feedback not taken", e.message) from None
        if wants_json():
            resp = jsonify(prediction_id=row.id, verdict=row.verdict, label=row.user_label,
                           kept=True)
        elif g.mode == "fragment":
            resp = Response(render_template("_feedback.html", row=row))
        else:
            resp = Response(render_template("index.html", p=None, error=None, photo_url=None,
                                            feedback_row=row))
        resp.status_code = 201
        return resp

    register_review(app, feedback)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="alive")

    @app.get("/metrics")
    def metrics_endpoint():
        body, content_type = metrics.render_metrics()
        return Response(body + feedback_metrics.render(feedback.store), content_type=content_type)

    return app
