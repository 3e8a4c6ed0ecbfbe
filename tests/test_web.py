"""The web page's server: its routes, the queue, the upload limits and messages, and a level made through it."""

import io
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

import infer
from maps import load_level
from web import app as web

DONE = ("done", "failed")


@pytest.fixture
def client(model_dir, tmp_path):
    defaults = infer.parse_args(["--serve", "--model", str(model_dir), "--difficulty", "Expert"])
    root = tmp_path / "jobs"
    root.mkdir()
    with TestClient(web.create_app(defaults, root)) as c:
        c.root = root
        yield c


def wav_bytes(seconds: float, rate: int = 22050) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def upload(client, name: str, data: bytes, **fields):
    form = {key: value for key, value in fields.items()}
    return client.post("/jobs", files={"song": (name, data, "application/octet-stream")}, data=form)


def finished(client, job_id: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = client.get(f"/jobs/{job_id}").json()
        if state["state"] in DONE:
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {seconds} s: {state}")


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- the page and its choices


def test_the_page_carries_infer_py_choices_and_limits(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '"difficulties": ["Easy", "Normal", "Hard", "Expert", "ExpertPlus"]' in page.text
    assert '"default_difficulties": ["Expert"]' in page.text  # the server's --difficulty
    assert f'"max_bytes": {infer.MAX_SONG_BYTES}' in page.text and '"lights": ["full", "simple", "none"]' in page.text


# ---------------------------------------------------------------- bad uploads: infer.py's one line, on the page


def test_not_audio_gets_infer_py_message_with_the_upload_name(client):
    reply = upload(client, "notes.ogg", b"this is not a song at all")
    assert reply.status_code == 400
    message = reply.json()["error"]
    assert message.startswith("notes.ogg: unreadable audio") and str(client.root) not in message
    assert files_under(client.root) == set()  # the rejected upload is gone


def test_too_short_and_too_long_songs_are_refused(client, monkeypatch):
    short = upload(client, "short.wav", wav_bytes(2.0))
    assert short.status_code == 400
    assert short.json()["error"] == "short.wav: 2.0 s of audio; a song needs at least 5 s"
    monkeypatch.setattr(infer, "MAX_SONG_MINUTES", 0.1)
    long = upload(client, "long.wav", wav_bytes(9.0))
    assert long.status_code == 400
    assert long.json()["error"] == "long.wav: 0.1 minutes long; a song may be at most 0.1 minutes"


def test_too_large_uploads_are_refused_without_keeping_them(client, monkeypatch):
    monkeypatch.setattr(infer, "MAX_SONG_BYTES", 50_000)
    reply = upload(client, "big.wav", wav_bytes(6.0))  # ~260 kB
    assert reply.status_code == 413 and "a song may be at most" in reply.json()["error"]
    assert files_under(client.root) == set()


def test_other_file_types_and_bad_options_are_refused(client):
    assert upload(client, "song.exe", b"MZ").json()["error"].startswith("song.exe: not a song file this mapper reads")
    wav = wav_bytes(6.0)
    assert "is none of" in upload(client, "a.wav", wav, difficulty="Impossible").json()["error"]
    assert upload(client, "a.wav", wav, bpm="-3").json()["error"].startswith("bpm: -3 is out of range")
    assert upload(client, "a.wav", wav, offset="soon").json()["error"] == "offset: 'soon' is not a number"
    assert upload(client, "a.wav", wav, lights="disco").status_code == 400
    assert client.post("/jobs", data={"bpm": "120"}).json()["error"] == "upload: no song file in the form"


def test_a_hostile_file_name_never_leaves_the_job_folder(client, song, monkeypatch):
    monkeypatch.setattr(infer, "map_song", lambda args, report, models: (_ for _ in ()).throw(infer.UsageError("x")))
    reply = upload(client, "../../../../tmp/evil/..\\..\\song.ogg", song.read_bytes())
    assert reply.status_code == 202
    finished(client, reply.json()["id"])
    written = files_under(client.root)
    assert [p.name for p in written] == ["song.ogg"]
    assert all(client.root in p.parents for p in written)


def test_unknown_jobs_are_404(client):
    for route in ("", "/events", "/result", "/level.zip", "/song.egg"):
        assert client.get(f"/jobs/0123456789abcdef{route}").status_code == 404
    assert client.get("/jobs/..%2F..%2Fetc%2Fpasswd/level.zip").status_code == 404


# ---------------------------------------------------------------- a level made through the page


def test_a_song_becomes_a_level_with_preview_notes_scores_and_a_download(client, song):
    reply = upload(client, "My Song.ogg", song.read_bytes(), difficulty=["Normal", "Expert"], bpm="100", offset="0")
    assert reply.status_code == 202 and reply.json()["place"] == 1
    job_id = reply.json()["id"]
    assert finished(client, job_id)["state"] == "done"
    result = client.get(f"/jobs/{job_id}/result").json()
    assert result["tempo"]["bpm"] == 100 and result["tempo"]["tracker"] == "given"
    assert set(result["difficulties"]) == {"Normal", "Expert"}
    expert = result["difficulties"]["Expert"]
    assert expert["scores"]["notes"] == len(expert["notes"]) > 0
    times = [n[0] for n in expert["notes"]]
    assert times == sorted(times) and all(0 <= x < 4 and 0 <= y < 3 for _, x, y, _, _ in expert["notes"])
    download = client.get(result["download"])
    assert download.status_code == 200 and "My%20Song.zip" in download.headers["content-disposition"]
    level = tmp_level(download.content)
    assert {d.difficulty for d in level.difficulties} == {"Normal", "Expert"}
    saved = next(d for d in level.difficulties if d.difficulty == "Expert").objects.counts()
    for kind in ("bombs", "walls", "arcs", "chains"):  # the canvas gets every object the zip holds
        assert len(expert[kind]) == expert["scores"].get(kind, 0) == saved[kind]
        assert all(0 <= row[0] < 60 for row in expert[kind])  # seconds of the song
    for start, end, x, y, width, height in expert["walls"]:
        assert start < end and 0 <= x < x + width <= 4 and 0 <= y < y + height <= 5
    for head, x0, y0, tail, x1, y1, *_ in expert["arcs"] + expert["chains"]:
        assert head < tail and all(0 <= v < 4 for v in (x0, x1)) and all(0 <= v < 3 for v in (y0, y1))
    audio = client.get(f"/jobs/{job_id}/song.egg")
    assert audio.headers["content-type"] == "audio/ogg"
    assert sf.info(io.BytesIO(audio.content)).duration > 5  # the level's own song, which the preview plays
    stream = client.get(f"/jobs/{job_id}/events").text
    assert stream.startswith("data: ") and '"state": "done"' in stream


def tmp_level(data: bytes):
    """The downloaded zip, loaded as the game's maps are."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "Info.dat" in archive.namelist()
    path = Path(__import__("tempfile").mkdtemp()) / "level.zip"
    path.write_bytes(data)
    return load_level(path)


# ---------------------------------------------------------------- the queue


def test_jobs_run_one_at_a_time_and_the_rest_see_their_place(client, song, monkeypatch):
    release, running = threading.Event(), []

    def held(args, report, models):
        running.append(args.song)
        report("decoding", 1, 4)
        release.wait(30)
        raise infer.UsageError(f"{args.song}: stopped by the test")

    monkeypatch.setattr(infer, "map_song", held)
    first, second, third = (upload(client, f"s{i}.ogg", song.read_bytes()).json() for i in range(3))
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{first['id']}").json()["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    states = [client.get(f"/jobs/{j['id']}").json() for j in (first, second, third)]
    assert [s["state"] for s in states] == ["running", "queued", "queued"]
    assert [s["place"] for s in states] == [None, 1, 2]
    assert states[0]["stage"] == "decoding" and 0 < states[0]["fraction"] < 1
    assert len(running) == 1
    release.set()
    for job in (first, second, third):
        state = finished(client, job["id"])
        assert state["state"] == "failed" and state["error"].endswith("stopped by the test")
        assert str(client.root) not in state["error"]  # the page sees the upload's name, never the server's folders


def test_a_full_queue_turns_uploads_away(client, song, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(web, "MAX_QUEUE", 1)

    def held(args, report, models):
        release.wait(30)
        raise infer.UsageError(f"{args.song}: stopped by the test")

    monkeypatch.setattr(infer, "map_song", held)
    replies = [upload(client, f"s{i}.ogg", song.read_bytes()) for i in range(3)]
    release.set()
    assert replies[-1].status_code == 503 and "already waiting" in replies[-1].json()["error"]


def test_old_jobs_files_are_swept(client, song, monkeypatch):
    monkeypatch.setattr(infer, "map_song", lambda args, report, models: (_ for _ in ()).throw(infer.UsageError("x")))
    job_id = upload(client, "s.ogg", song.read_bytes()).json()["id"]
    finished(client, job_id)
    jobs = client.app.state.jobs
    jobs.get(job_id).ended -= web.KEEP_SECONDS + 1
    jobs.sweep()
    assert client.get(f"/jobs/{job_id}").status_code == 404 and files_under(client.root) == set()


# ---------------------------------------------------------------- starting it


def test_serve_without_a_model_says_how_to_get_one(tmp_path, capsys):
    assert infer.main(["--serve", "--model", str(tmp_path / "nothing")]) == infer.EXIT_USAGE
    assert "no model at" in capsys.readouterr().err


def test_serve_and_a_song_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        infer.parse_args(["song.ogg", "--serve"])
    assert "not both" in capsys.readouterr().err


def test_progress_only_grows_through_the_stages_and_alternating_batches(tmp_path):
    job = web.Job("a", tmp_path, tmp_path / "s.ogg", "s.ogg", {}, state="running", started=time.monotonic())
    steps = [("song and tempo", 0, 1), ("model", 0, 1), *[("encodec", i, 4) for i in range(1, 5)]]
    steps += [("prefill", 50, 100), ("decoding", 10, 40), ("prefill", 100, 100), ("decoding", 40, 40), ("level", 0, 1)]
    fractions = []
    for step in steps:
        job.report(*step)
        fractions.append(job.fraction())
    assert fractions == sorted(fractions) and fractions[0] == 0 < fractions[1] and fractions[-1] < 1
    assert job.status(None)["eta_seconds"] is not None
    job.state = "done"
    assert job.fraction() == 1.0 and job.status(None)["eta_seconds"] is None
