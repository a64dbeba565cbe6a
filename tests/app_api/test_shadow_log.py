"""The API's shadow log (app_api/shadow.py): several writer processes at once, as
gunicorn's workers are, with rotation; bounded size; ids that are not Nginx's refused."""

from __future__ import annotations

import json
import multiprocessing
import os

from app_api.shadow import LOG_NAME, ShadowLog, read_records

MAX = 64 * 1024


def _writer(folder: str, worker: int, n: int) -> None:
    log = ShadowLog(folder, MAX)
    for i in range(n):
        log.record(f"{worker:08x}{i:024x}", "Bread", 0.5)
    log.close()


def test_workers_append_whole_lines_and_rotation_bounds_the_folder(tmp_path):
    workers, n = 4, 3000  # about 80 bytes a line: 960 kB written, 15 times the limit
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    files = sorted(tmp_path.glob(LOG_NAME + "*"))
    assert [f.name for f in files] == [LOG_NAME, LOG_NAME + ".1"]
    total = sum(f.stat().st_size for f in files)
    # Two files of at most the limit, plus one line per worker written to a file just
    # rotated away.
    assert total <= 2 * MAX + workers * 100, total
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert len(lines) > MAX // 100
    for line in lines:  # no torn or interleaved line
        rec = json.loads(line)
        assert set(rec) == {"id", "t", "class", "p"}
    # Every kept line is one record, none lost or doubled by a concurrent rotation,
    # and at least one limit's worth of the newest history is kept.
    got = read_records(tmp_path)
    assert len(got) == len(lines) and len(lines) * 80 >= MAX


def test_ids_that_are_not_nginx_request_ids_are_not_logged(tmp_path):
    log = ShadowLog(tmp_path, MAX)
    for bad in ("", "x" * 32, "0" * 31, "0" * 33, "A" * 32, '0123456789abcdef0123456789abcde"'):
        assert log.record(bad, "Bread", 0.5) is False
    assert log.record("0" * 32, "Bread", 0.5) is True
    assert list(read_records(tmp_path)) == ["0" * 32]


def test_reader_skips_torn_lines_and_keeps_the_window(tmp_path):
    (tmp_path / LOG_NAME).write_text(
        json.dumps({"id": "a" * 32, "t": 10.0, "class": "Soup", "p": 0.7}) + "\n"
        + '{"id": "b' + "\n" + "not json\n"
        + json.dumps({"id": "c" * 32, "t": 20.0, "class": "Egg", "p": 0.9}) + "\n")
    assert read_records(tmp_path, since=15.0) == {"c" * 32: (20.0, "Egg", 0.9)}
    assert set(read_records(tmp_path)) == {"a" * 32, "c" * 32}


def test_a_writer_follows_a_rotation_done_by_another(tmp_path):
    a, b = ShadowLog(tmp_path, MAX), ShadowLog(tmp_path, MAX)
    a.record("1" * 32, "Bread", 0.5)
    b.record("2" * 32, "Bread", 0.5)
    os.replace(tmp_path / LOG_NAME, tmp_path / (LOG_NAME + ".1"))  # as a rotation does
    b.record("3" * 32, "Bread", 0.5)  # lands in the rotated file, then b reopens
    b.record("4" * 32, "Bread", 0.5)
    assert "4" * 32 in (tmp_path / LOG_NAME).read_text()
    assert set(read_records(tmp_path)) == {c * 32 for c in "1234"}
