"""``gourmetgram load``: the lab's traffic experiments (ramp, error ramp, image folders,
open-loop rate) as a library that the CLI and the tests share."""

from gourmetgram.load.endpoint import EndpointError, resolve_endpoint
from gourmetgram.load.generator import LoadRun, run_load
from gourmetgram.load.report import plot, write_records, write_report
from gourmetgram.load.spec import (
    ERROR_BODIES,
    ERROR_RAMP_CLIENTS,
    IMAGE_SUFFIXES,
    NO_VARIANT,
    RAMP_CLIENTS,
    LoadResult,
    LoadSpec,
    Payloads,
    Phase,
    Record,
    default_photo,
    find_images,
    stepped,
)
from gourmetgram.load.summary import format_summary, percentile, status_label, summarize

__all__ = [
    "ERROR_BODIES", "ERROR_RAMP_CLIENTS", "IMAGE_SUFFIXES", "NO_VARIANT", "RAMP_CLIENTS", "EndpointError",
    "LoadResult", "LoadRun", "LoadSpec", "Payloads", "Phase", "Record", "default_photo", "find_images",
    "format_summary", "percentile", "plot", "resolve_endpoint", "run_load", "status_label", "stepped",
    "summarize", "write_records", "write_report",
]
