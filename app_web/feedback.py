"""What happens to a prediction after it is shown: it waits (photo included) in the
pending store for the person's "right" / "wrong", or, when the review sampling
settings draw it, is kept at once for the operator's review queues. A verdict on a
waiting prediction makes it durable (photo fsynced, then the row committed) before
it is acknowledged. The operator's labels go to the same rows."""

from __future__ import annotations

import random
import re
import time

from app_web.accuracy import inclusion_probability
from app_web.api_client import Prediction
from app_web.feedback_store import FeedbackStore, Row
from app_web.pending import PendingStore
from app_web.photo_store import PhotoStore
from app_web.settings import WebSettings
from app_web.uploads import EXTENSIONS

PREDICTION_ID = re.compile(r"[0-9a-f]{32}")
VERDICTS = ("right", "wrong")


class FeedbackError(Exception):
    """Refused feedback: the HTTP status and a sentence for the person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class FeedbackService:
    def __init__(self, settings: WebSettings):
        self.settings = settings
        self.store = FeedbackStore(settings.feedback_db_url, settings.feedback_dir)
        self.photos = PhotoStore(settings.feedback_dir / "photos")
        self.pending = PendingStore(settings.pending_dir or settings.feedback_dir / "pending",
                                    settings.pending_seconds, settings.pending_keep,
                                    settings.pending_max_bytes)
        self.classes = settings.classes

    @property
    def samples(self) -> bool:
        return self.settings.review_sample_rate > 0 or self.settings.review_low_confidence_rate > 0

    def record(self, prediction: Prediction, photo: bytes, fmt: str) -> str:
        """Called after each answer; returns the queue ('pending' unless sampled)."""
        s = self.settings
        low = prediction.probability < s.review_low_confidence_below
        in_random = random.random() < s.review_sample_rate
        in_low = low and random.random() < s.review_low_confidence_rate
        record = {**prediction.as_json(), "time": time.time(), "ext": EXTENSIONS.get(fmt, "bin")}
        if not (in_random or in_low):
            self.pending.put(prediction.prediction_id, record, photo)
            return "pending"
        p = inclusion_probability(prediction.probability, s.review_sample_rate,
                                  s.review_low_confidence_rate, s.review_low_confidence_below)
        queue = "low_confidence" if in_low else "random"
        self._keep(record, photo, queue, p)
        return queue

    def _keep(self, record: dict, photo: bytes, queue: str, probability: float | None,
              **verdict) -> bool:
        sha = self.photos.put(photo, record["ext"])  # durable before the row names it
        return self.store.insert(Row(
            id=record["prediction_id"], variant=record["variant"],
            model_version=record["model_version"], predicted=record["prediction"],
            confidence=record["probability"], predicted_at=record["time"], photo_sha256=sha,
            photo_ext=record["ext"], queue=queue, sampling_probability=probability,
            review_key=random.random(), **verdict,
        ))

    def check_id(self, prediction_id) -> str:
        if not isinstance(prediction_id, str) or not prediction_id:
            raise FeedbackError(400, "The feedback names no prediction (field prediction_id).")
        if not PREDICTION_ID.fullmatch(prediction_id):
            raise FeedbackError(400, "That is not a prediction id (32 hexadecimal digits).")
        return prediction_id

    def check_label(self, label) -> str:
        if label not in self.classes:
            raise FeedbackError(
                422, f"{str(label)[:60]!r} is not one of the classifier's classes: "
                + ", ".join(self.classes) + ".")
        return label

    def verdict(self, prediction_id, verdict, label=None, note=None) -> Row:
        """Stores the person's answer once; raises FeedbackError (4xx) for anything else."""
        pid = self.check_id(prediction_id)
        if verdict not in VERDICTS:
            raise FeedbackError(422, "Say whether the answer was right or wrong "
                                     "(field verdict: right or wrong).")
        note = (note or "").strip() or None
        if note is not None and len(note) > self.settings.note_max_chars:
            raise FeedbackError(413, f"The note is {len(note)} characters long; "
                                     f"up to {self.settings.note_max_chars} are kept.")
        label = label or None
        found = self.store.get(pid)
        waiting = None if found else self.pending.get(pid)
        if found is None and waiting is None:
            raise FeedbackError(404, "We do not know that prediction (or it is more than "
                                     f"{self.settings.pending_seconds // 60} minutes old).")
        predicted = found.predicted if found else waiting[0]["prediction"]
        if verdict == "wrong":
            if label is None:
                raise FeedbackError(422, "Pick the right class for this photo (field label).")
            self.check_label(label)
            if label == predicted:
                raise FeedbackError(422, f"{label} is what the classifier said; "
                                         "choose another class, or say it was right.")
        elif label is not None and label != predicted:
            raise FeedbackError(422, f"The classifier said {predicted}, not {label}: "
                                     "say it was wrong to correct it.")
        answer = {"verdict": verdict, "user_label": label if verdict == "wrong" else predicted,
                  "note": note, "verdict_at": time.time()}
        if found is None:
            queue = "flagged" if verdict == "wrong" else "confirmed"
            if self._keep(waiting[0], waiting[1], queue, None, **answer):
                self.pending.remove(pid)
                return self.store.get(pid)
        elif self.store.set_verdict(pid, answer["verdict"], answer["user_label"], note,
                                    answer["verdict_at"]):
            return self.store.get(pid)
        raise FeedbackError(409, "This prediction already has an answer; it is kept as given.")

    def label(self, prediction_id, label, operator: str) -> Row:
        pid = self.check_id(prediction_id)
        self.check_label(label)
        if not self.store.set_label(pid, label, operator, time.time()):
            raise FeedbackError(404, "No kept photo has that prediction id.")
        return self.store.get(pid)
