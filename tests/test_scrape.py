"""scrape.py against a local server on 127.0.0.1 that speaks BeatSaver's shapes (no internet)."""

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

import scrape
from conftest import ROOT, level_dict, zip_bytes

GOOD_ZIP = zip_bytes(level_dict("v3") | {"song.ogg": b"not decoded by the checks"})
PAGE_SIZE = 4


def _doc(map_id: str, **changes) -> dict:
    doc = {
        "id": map_id,
        "name": f"Map {map_id}",
        "uploader": {"name": "someone"},
        "metadata": {
            "bpm": 150,
            "duration": 90,
            "songName": f"Song {map_id}",
            "songAuthorName": "Artist",
            "levelAuthorName": "Mapper",
        },
        "stats": {"upvotes": 40, "downvotes": 2, "score": 0.9},
        "uploaded": "2023-05-01T12:00:00.000Z",
        "automapper": False,
        "declaredAi": "None",
        "tags": ["electronic"],
        "versions": [
            {
                "hash": f"hash{map_id}",
                "downloadURL": f"/cdn/{map_id}.zip",
                "diffs": [{"characteristic": "Standard", "difficulty": "Hard", "nps": 3.2, "notes": 4, "ne": False}],
            }
        ],
    }
    for key, value in changes.items():
        if key == "diffs":
            doc["versions"][0]["diffs"] = value
        elif key in doc["stats"]:
            doc["stats"][key] = value
        else:
            doc[key] = value
    return doc


# (document, zip bytes or None for a 404, expected reason or None for ok); in page order
MAPS = [
    (_doc("a1"), GOOD_ZIP, None),
    (_doc("a2", automapper=True), GOOD_ZIP, "automapper"),
    (_doc("a3", declaredAi="SongAndMap"), GOOD_ZIP, "declared AI"),
    (_doc("a4", score=0.6), GOOD_ZIP, "rating below --min-rating"),
    # page 1: answers 503 once, then works
    (_doc("b1", upvotes=2), GOOD_ZIP, "upvotes below --min-upvotes"),
    (_doc("b2", diffs=[{"characteristic": "OneSaber", "difficulty": "Hard"}]), GOOD_ZIP, "no Standard difficulty"),
    (
        _doc("b3", diffs=[{"characteristic": "Standard", "ne": True}, {"characteristic": "Standard", "me": True}]),
        GOOD_ZIP,
        "every Standard difficulty needs Noodle/Mapping Extensions",
    ),
    (_doc("b4"), GOOD_ZIP, None),
    # page 2: always 503, skipped
    (_doc("c1"), GOOD_ZIP, "never seen"),
    (_doc("c2"), GOOD_ZIP, "never seen"),
    (_doc("c3"), GOOD_ZIP, "never seen"),
    (_doc("c4"), GOOD_ZIP, "never seen"),
    # page 3: downloads that fail after download
    (_doc("d1"), None, "download failed: HTTP 404"),
    (_doc("d2"), GOOD_ZIP[: len(GOOD_ZIP) // 2], "not a readable zip"),
    (_doc("d3"), zip_bytes({"song.ogg": b"x", "Hard.dat": b"{}"}), "no Info.dat"),
    (_doc("d4"), zip_bytes(level_dict("v3") | {"../evil.txt": b"x"}), "unsafe member name"),
    # page 4
    (_doc("e1", uploaded="2021-03-01T00:00:00.000Z"), GOOD_ZIP, "uploaded before --since"),
    (_doc("e2"), zip_bytes(level_dict("v2") | {"song.egg": b"x"}), None),  # its Noodle diff rejected, Expert ok
    (
        _doc("e3"),
        zip_bytes(level_dict("v3")),
        "no trainable difficulty (not Standard characteristic; song file missing)",
    ),
    (_doc("e4"), GOOD_ZIP, None),
    # page 5
    (_doc("f1"), GOOD_ZIP, None),
    (_doc("f2"), GOOD_ZIP, None),
]
OK = {doc["id"] for doc, _, reason in MAPS if reason is None}
ALWAYS_FAILING_PAGE, FLAKY_PAGE = 2, 1


class FakeBeatSaver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, limit_per_second: int = 1000, retry_after: float = 1.0, slow: str | None = None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.limit, self.retry_after, self.slow = limit_per_second, retry_after, slow
        self.log: list[tuple[float, str, int, str]] = []  # (time, path, status, user agent)
        self.completed: dict[str, int] = {}  # map id -> finished downloads
        self.flaky_served = False
        self.slow_started = threading.Event()
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def too_fast(self, now: float) -> bool:
        recent = [t for t, *_ in self.log if now - t < 1.0]
        return len(recent) >= self.limit


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server: FakeBeatSaver = self.server
        url = urlparse(self.path)
        with server.lock:
            now = time.monotonic()
            status = 429 if server.too_fast(now) else self._status(url.path)
            server.log.append((now, url.path, status, self.headers.get("User-Agent", "")))
        if status == 429:
            return self._send(429, b"slow down", {"Retry-After": f"{server.retry_after:g}"})
        if status != 200:
            return self._send(status, b"error")
        if url.path.startswith("/search/text/"):
            assert parse_qs(url.query)["sortOrder"] == ["Rating"]
            page = int(url.path.rsplit("/", 1)[1])
            docs = [doc for doc, _, _ in MAPS[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]]
            return self._send(200, json.dumps({"docs": docs}).encode(), {"Content-Type": "application/json"})
        map_id = url.path.rsplit("/", 1)[1].removesuffix(".zip")
        data = next(z for doc, z, _ in MAPS if doc["id"] == map_id)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if map_id == server.slow:
            server.slow_started.set()
            for i in range(0, len(data), 64):
                self.wfile.write(data[i : i + 64])
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(data)
        with server.lock:
            server.completed[map_id] = server.completed.get(map_id, 0) + 1

    def _status(self, path: str) -> int:
        server: FakeBeatSaver = self.server
        if path == f"/search/text/{ALWAYS_FAILING_PAGE}":
            return 503
        if path == f"/search/text/{FLAKY_PAGE}" and not server.flaky_served:
            server.flaky_served = True
            return 503
        if path.startswith("/cdn/"):
            map_id = path.rsplit("/", 1)[1].removesuffix(".zip")
            return 200 if next(z for doc, z, _ in MAPS if doc["id"] == map_id) is not None else 404
        return 200

    def _send(self, status: int, body: bytes, headers: dict | None = None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(request):
    options = getattr(request, "param", {})
    fake = FakeBeatSaver(**options)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


def _rewrite_urls(server: FakeBeatSaver) -> None:
    for doc, _, _ in MAPS:
        doc["versions"][0]["downloadURL"] = server.url + f"/cdn/{doc['id']}.zip"


def _args(server, out, *extra: str) -> list[str]:
    _rewrite_urls(server)
    return ["--api-url", server.url, "--out", str(out), "--count", "100", "--rate", "200", "--retries", "2"] + [
        "--backoff",
        "0.05",
        "--quiet",
        *extra,
    ]


def _manifest(out) -> dict[str, dict]:
    entries = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)  # every line is valid JSON
        entries[entry["id"]] = entry
    return entries


def _expected_reasons() -> dict[str, str]:
    return {doc["id"]: reason for doc, _, reason in MAPS if reason not in (None, "never seen")}


def _check_final_state(out, server=None) -> None:
    manifest = _manifest(out)
    assert {i for i, e in manifest.items() if e["status"] == "ok"} == OK
    for map_id, reason in _expected_reasons().items():
        assert manifest[map_id]["status"] == "rejected" and reason in manifest[map_id]["reason"], map_id
    assert not {doc["id"] for doc, _, reason in MAPS if reason == "never seen"} & set(manifest)
    assert {p.name for p in out.iterdir()} == {f"{i}.zip" for i in OK} | {"manifest.jsonl"}
    ok = manifest["a1"]
    assert (ok["path"], ok["hash"], ok["song_name"], ok["mapper"], ok["bpm"], ok["upvotes"]) == (
        "a1.zip",
        "hasha1",
        "Song a1",
        "Mapper",
        150,
        40,
    )
    assert ok["difficulties"] == [{"characteristic": "Standard", "difficulty": "Hard", "nps": 3.2, "notes": 4}]


# ---------------------------------------------------------------- end to end


def test_scrape_end_to_end(server, tmp_path):
    out = tmp_path / "maps"
    assert scrape.main(_args(server, out, "--workers", "3")) == 0
    _check_final_state(out)
    assert list(tmp_path.iterdir()) == [out]  # nothing written outside OUT
    assert all(agent.startswith("beatsaber-automapper-scraper/") for *_, agent in server.log)
    # decoys rejected from their documents were never downloaded
    downloaded = {path.rsplit("/", 1)[1][:-4] for _, path, _, _ in server.log if path.startswith("/cdn/")}
    assert downloaded == OK | {"d1", "d2", "d3", "d4", "e3"}
    assert all(count == 1 for count in server.completed.values())


def test_rerun_neither_downloads_nor_judges_again(server, tmp_path):
    out = tmp_path / "maps"
    assert scrape.main(_args(server, out)) == 0
    lines = (out / "manifest.jsonl").read_text()
    before = len(server.log)
    assert scrape.main(_args(server, out)) == 0
    assert (out / "manifest.jsonl").read_text() == lines
    assert not [path for _, path, _, _ in server.log[before:] if path.startswith("/cdn/")]


def test_count_stops_after_n_ok(server, tmp_path):
    out = tmp_path / "maps"
    assert scrape.main(_args(server, out, "--workers", "2") + ["--count", "2"]) == 0
    manifest = _manifest(out)
    assert sorted(i for i, e in manifest.items() if e["status"] == "ok") == ["a1", "b4"]
    assert sum(path.startswith("/cdn/") for _, path, _, _ in server.log) == 2  # no download beyond the count


@pytest.mark.parametrize("server", [{"limit_per_second": 6, "retry_after": 1.0}], indirect=True)
def test_429_waits_retry_after_and_sends_nothing_meanwhile(server, tmp_path):
    out = tmp_path / "maps"
    assert scrape.main(_args(server, out, "--workers", "1")) == 0
    _check_final_state(out)
    refusals = [t for t, _, status, _ in server.log if status == 429]
    assert refusals, "the client never went faster than the server allows"
    for refused in refusals:
        # 0.1 s of slack for a request another thread had already sent when the 429 arrived
        during = [t for t, *_ in server.log if refused + 0.1 < t < refused + server.retry_after - 0.05]
        assert not during


def test_rate_limit_is_kept(server, tmp_path):
    out = tmp_path / "maps"
    assert scrape.main(_args(server, out, "--workers", "3") + ["--rate", "10"]) == 0
    times = sorted(t for t, *_ in server.log)
    # 10 requests/s at most, downloads included: any 11 consecutive arrivals span about a second
    # (compared over spans, not single gaps, which loopback jitter can squeeze)
    spans = [b - a for a, b in zip(times, times[10:])]
    assert len(times) > 20 and min(spans) > 0.9


# ---------------------------------------------------------------- interruptions


def _run(server, out, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "scrape.py", *_args(server, out, "--workers", "1", *extra)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a test run started in the background inherits an ignored SIGINT, and Python then never
        # raises KeyboardInterrupt: give the child the default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupted(server, out, sig: int) -> subprocess.Popen:
    """A scrape.py run sent `sig` while it downloads the slow map e4; returns it, ended."""
    run = _run(server, out)
    assert server.slow_started.wait(60)
    run.send_signal(sig)
    run.wait(30)
    return run


@pytest.mark.parametrize("server", [{"slow": "e4"}], indirect=True)
def test_killed_mid_download_then_rerun_matches_an_uninterrupted_run(server, tmp_path):
    out = tmp_path / "maps"
    _interrupted(server, out, signal.SIGKILL)
    assert not (out / "e4.zip").exists()
    _manifest(out)  # still valid JSON lines
    server.slow = None
    rerun = _run(server, out)
    assert rerun.wait(120) == 0, rerun.stderr.read().decode()[-2000:]
    _check_final_state(out)
    assert all(server.completed.get(map_id) == 1 for map_id in OK)  # no ok map downloaded twice


@pytest.mark.parametrize("server", [{"slow": "e4"}], indirect=True)
def test_ctrl_c_leaves_a_valid_manifest_and_no_partial_zip(server, tmp_path):
    out = tmp_path / "maps"
    run = _interrupted(server, out, signal.SIGINT)
    assert run.returncode == 130 and "interrupted" in run.stderr.read().decode()
    names = {p.name for p in out.iterdir()}
    assert "e4.zip" not in names and not [n for n in names if n.endswith(".part")]
    manifest = _manifest(out)
    assert "e4" not in manifest and manifest["a1"]["status"] == "ok"


def test_transient_download_failure_is_retried_by_the_next_run(server, tmp_path, monkeypatch):
    out = tmp_path / "maps"
    real_status = Handler._status
    monkeypatch.setattr(
        Handler, "_status", lambda self, path: 503 if path == "/cdn/f1.zip" else real_status(self, path)
    )
    assert scrape.main(_args(server, out)) == 0
    assert "f1" not in _manifest(out)  # not decided: skipped for now
    monkeypatch.setattr(Handler, "_status", real_status)
    assert scrape.main(_args(server, out)) == 0
    _check_final_state(out)


def test_a_line_cut_short_is_dropped_on_reopen(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"id": "x", "status": "ok"}\n{"id": "y", "sta')
    manifest = scrape.Manifest(tmp_path / "manifest.jsonl")
    assert set(manifest.entries) == {"x"}
    manifest.record({"id": "z", "status": "rejected", "reason": "r"})
    assert [json.loads(line)["id"] for line in (tmp_path / "manifest.jsonl").read_text().splitlines()] == ["x", "z"]


# ---------------------------------------------------------------- filter only


def test_filter_only_rechecks_without_network(server, tmp_path):
    out = tmp_path / "maps"
    assert scrape.main(_args(server, out)) == 0
    requests_before = len(server.log)
    (out / "zz.zip").write_bytes(zip_bytes(level_dict("v3")))  # no song: fails the checks
    (out / "yy.zip").write_bytes(GOOD_ZIP)  # unknown but fine
    manifest = scrape.Manifest(out / "manifest.jsonl")
    manifest.record(manifest.entries["f2"] | {"upvotes": 7})
    assert (
        scrape.main(["--out", str(out), "--filter-only", "--min-upvotes", "10", "--api-url", "http://127.0.0.1:9"]) == 0
    )
    assert len(server.log) == requests_before
    after = _manifest(out)
    assert after["f2"]["status"] == "rejected" and after["f2"]["reason"] == "upvotes below --min-upvotes"
    assert after["zz"]["status"] == "rejected" and "song file missing" in after["zz"]["reason"]
    assert after["yy"]["status"] == "ok"
    assert {p.name for p in out.glob("*.zip")} == {f"{i}.zip" for i in OK - {"f2"}} | {"yy.zip"}


# ---------------------------------------------------------------- document rules


def test_judge_document_rules():
    since = scrape.datetime(2022, 1, 1, tzinfo=scrape.timezone.utc)
    judge = lambda doc: scrape.judge_document(doc, 0.75, 5, since)  # noqa: E731
    assert judge(_doc("ok")) is None
    assert judge(_doc("x", declaredAi="Map")) == "declared AI"
    assert judge(_doc("x", stats={})) == "rating below --min-rating"
    assert judge(_doc("x", uploaded="garbage")) == "uploaded before --since"
    assert judge(_doc("x", versions=[])) == "no downloadable version"
    mixed = [{"characteristic": "Standard", "ne": True}, {"characteristic": "Standard", "me": False}]
    assert judge(_doc("x", diffs=mixed)) is None  # one playable Standard difficulty is enough
