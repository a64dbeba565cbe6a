"""``feedback export``: the labelled photos of the feedback store as an ImageFolder
tree with a manifest (app_web/feedback_export.py). On the host its defaults are the
web app's (``WEB_FEEDBACK_DIR``, ``WEB_FEEDBACK_DB_URL``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gourmetgram.errors import UsageError


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app_web.feedback_export import export
    from app_web.feedback_store import FeedbackStore
    from app_web.photo_store import PhotoStore
    from app_web.settings import WebSettings

    overrides = {k: v for k, v in (("feedback_dir", args.feedback_dir),
                                   ("feedback_db_url", args.db_url)) if v is not None}
    try:
        settings = WebSettings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        raise UsageError(f"bad setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty: export into a new folder")
    if not settings.feedback_db_url and not (settings.feedback_dir / "feedback.sqlite3").exists():
        raise UsageError(f"no feedback store in {settings.feedback_dir} (see --feedback-dir)")
    store = FeedbackStore(settings.feedback_db_url, settings.feedback_dir)
    summary = export(store, PhotoStore(settings.feedback_dir / "photos"), out,
                     operator_only=args.operator_only)
    for label, n in sorted(summary.per_class.items()):
        print(f"{n:6d}  {label}")
    print(f"{summary.photos} labelled photos in {out}; manifest {summary.manifest}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("feedback", help="the feedback store: export labelled photos")
    fsub = s.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    e = fsub.add_parser(
        "export", help="write labelled photos as class folders (ImageFolder) with manifest.csv",
        description="Labels: the operator's where given, else the person's correction or "
        "confirmation (--operator-only keeps the operator's only).",
    )
    e.add_argument("--out", required=True, help="new or empty folder to write")
    e.add_argument("--feedback-dir", help="WEB_FEEDBACK_DIR (default /var/lib/gourmetgram/feedback)")
    e.add_argument("--db-url", help="WEB_FEEDBACK_DB_URL ('' = SQLite in the feedback folder)")
    e.add_argument("--operator-only", action="store_true", help="only the operator's labels")
    e.set_defaults(func=cmd_feedback_export)
