"""The operator's review page, ``/review``: the queues of kept photos (flagged by
people, low-confidence and random samples), a form to label each, and the online
accuracy estimate per variant. Behind HTTP Basic auth (user ``operator``) with a
password generated at deploy time and handed over as a systemd credential
(``WEB_REVIEW_PASSWORD_FILE``); without one, the page does not exist."""

from __future__ import annotations

import functools
import hashlib
import hmac
import mimetypes

from flask import Flask, Response, jsonify, redirect, render_template, request, url_for

from app_web.accuracy import estimate_groups
from app_web.feedback import FeedbackError, FeedbackService

OPERATOR = "operator"
QUEUES = (
    ("flagged", "Flagged by people", "They said the answer was wrong and picked a class."),
    ("low_confidence", "Low confidence", "A random share of answers the classifier was unsure of."),
    ("random", "Random sample", "A random share of all answers."),
)
PER_QUEUE = 12


def register_review(app: Flask, service: FeedbackService) -> None:
    settings = service.settings
    if settings.review_password_file is None:
        return
    password = settings.review_password_file.read_text().strip().encode()
    if len(password) < 12:
        raise ValueError(f"{settings.review_password_file}: the review password is too short")
    token = hmac.new(password, b"gourmetgram-review-form", hashlib.sha256).hexdigest()

    def authorised() -> bool:
        auth = request.authorization
        return (auth is not None and auth.type == "basic" and auth.username == OPERATOR
                and hmac.compare_digest((auth.password or "").encode(), password))

    def challenge() -> Response:
        resp = Response("The review page needs the operator's password.\n", 401,
                        content_type="text/plain; charset=utf-8")
        resp.headers["WWW-Authenticate"] = 'Basic realm="GourmetGram review", charset="UTF-8"'
        return resp

    def operator_only(view):
        """Every review route answers 401 with the Basic challenge to anyone else."""
        @functools.wraps(view)
        def guarded(*args, **kw):
            return view(*args, **kw) if authorised() else challenge()
        return guarded

    @app.get("/review")
    @operator_only
    def review():
        queues = [(name, title, why, service.store.queue(name, PER_QUEUE))
                  for name, title, why in QUEUES]
        estimates = sorted(estimate_groups(service.store.sampled_sums()).items())
        return render_template(
            "review.html", queues=queues, estimates=estimates, classes=service.classes,
            token=token, recent=service.store.recent_labels(10), settings=settings,
        )

    @app.get("/review/photo/<prediction_id>")
    @operator_only
    def review_photo(prediction_id: str):
        row = service.store.get(prediction_id)
        if row is None:
            return Response("no such photo\n", 404, content_type="text/plain")
        body = service.photos.read(row.photo_sha256, row.photo_ext)
        kind = mimetypes.guess_type(f"x.{row.photo_ext}")[0] or "application/octet-stream"
        resp = Response(body, content_type=kind)
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    @app.post("/review/label")
    @operator_only
    def review_label():
        wants_json = request.accept_mimetypes.best == "application/json"
        if not hmac.compare_digest(request.form.get("token", ""), token):
            return _refuse(FeedbackError(403, "The form is stale or not from the review page; "
                                              "reload /review."), wants_json)
        try:
            row = service.label(request.form.get("prediction_id"), request.form.get("label"),
                                OPERATOR)
        except FeedbackError as e:
            return _refuse(e, wants_json)
        if wants_json:
            return jsonify(prediction_id=row.id, label=row.label, queue=row.queue)
        return redirect(url_for("review"), code=303)


def _refuse(e: FeedbackError, wants_json: bool) -> Response:
    if wants_json:
        resp = jsonify(detail=e.message)
    else:
        resp = Response(e.message + "\n", content_type="text/plain; charset=utf-8")
    resp.status_code = e.status
    return resp
