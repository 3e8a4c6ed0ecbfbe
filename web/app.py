"""The web page: upload a song, watch the mapping's progress, play the level's preview, download the zip.

    python infer.py --serve [--port 8765] [--model DIR]

Starlette (an ASGI toolkit: routes, uploads, streaming responses) served by uvicorn. One worker
thread maps one song at a time with the one loaded model; other uploads queue and see their
place. Every upload and result lives in one temporary folder that is removed when the server
stops, and each job's folder an hour after it ends. Requests name jobs only by their random id:
no path or file name from the client is ever opened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import infer
from data import DIFFICULTIES
from levels.lightshow import LIGHT_MODES
from levels.scorecard import scorecard, song_onsets
from maps import load_level, read_level_file

PAGE = Path(__file__).with_name("page.html")
SONG_TYPES = (".ogg", ".egg", ".wav", ".flac", ".mp3", ".opus", ".aiff", ".aif")  # what libsndfile reads
KEEP_SECONDS = 3600  # a finished job's files stay this long for the page to fetch
MAX_QUEUE = 8  # jobs waiting beyond the running one; more uploads are turned away
EVENT_SECONDS = 0.25  # how often the progress stream sends the job's state
UPLOAD_CHUNK = 1 << 20  # bytes read from the upload at a time
# each stage's share of a mapping's time, measured: the starter model on a 5-minute song, Normal and Expert, on
# the 2-core CPU (docs/web.md; tempo estimated, the model loaded for the first song only)
STAGE_SHARE = {"song and tempo": 0.12, "model": 0.13, "encodec": 0.38, "prefill": 0.09, "decoding": 0.22, "level": 0.06}
PHASES = (("encodec",), ("prefill", "decoding"))  # stages that count their steps; prefill and decoding alternate
LEVEL_NAME = "level.zip"


@dataclass
class Job:
    """One upload's mapping, as the page sees it."""

    id: str
    folder: Path  # this job's files: the upload, the level, its song
    song: Path  # the upload, under a name made here
    label: str  # the upload's name as the user knows it, for messages and the download
    options: dict  # infer.py's arguments chosen on the page
    state: str = "queued"  # queued -> running -> done | failed
    stage: str = ""  # one of infer.STAGES
    counts: dict = field(default_factory=dict)  # stage -> (done, total) as last reported
    stage_started: dict = field(default_factory=dict)  # stage -> when it was first reported
    started: float = 0.0
    ended: float = 0.0
    error: str = ""
    result: dict = field(default_factory=dict)  # when done: the tempo, scores and preview notes

    def report(self, stage: str, done: float, total: float) -> None:
        """infer.Report: the run's stage and its progress within it."""
        self.stage_started.setdefault(stage, time.monotonic())
        self.stage, self.counts[stage] = stage, (done, max(total, 1e-9))

    def share_done(self, stage: str) -> float:
        """0..1 of one stage: 1 for those passed, its counted share for the current one."""
        if self.state == "done" or infer.STAGES.index(stage) < infer.STAGES.index(self.stage or infer.STAGES[0]):
            return 1.0
        done, total = self.counts.get(stage, (0.0, 1.0))
        return min(1.0, done / total) if stage in self.counts and stage != "level" else 0.0

    def fraction(self) -> float:
        """The share of the whole mapping done, by the stages' usual shares of its time."""
        if self.state == "done":
            return 1.0
        if not self.stage:
            return 0.0
        return sum(share * self.share_done(name) for name, share in STAGE_SHARE.items()) / sum(STAGE_SHARE.values())

    def eta(self) -> float | None:
        """Seconds left: a counting phase extrapolates its own pace, the stages after it take their usual share
        of the run at the run's pace so far; other stages use the run's pace alone."""
        if self.state != "running" or not self.stage:
            return None
        now, fraction = time.monotonic(), self.fraction()
        phase = next((p for p in PHASES if self.stage in p), None)
        shares = sum(STAGE_SHARE.values())
        if phase:
            weight = sum(STAGE_SHARE[s] for s in phase)
            within = sum(STAGE_SHARE[s] * self.share_done(s) for s in phase) / weight
            if within > 0.02:
                elapsed = now - min(self.stage_started[s] for s in phase if s in self.stage_started)
                phase_left = elapsed * (1 - within) / within
                after = sum(STAGE_SHARE[s] for s in infer.STAGES[infer.STAGES.index(phase[-1]) + 1 :]) / shares
                run_pace = (now - self.started) / max(fraction, 1e-3)  # seconds per whole run
                return phase_left + after * run_pace
        if fraction < 0.05:
            return None  # too early to say
        return (now - self.started) * (1 - fraction) / fraction

    def status(self, place: int | None) -> dict:
        eta = self.eta()
        return {
            "id": self.id,
            "state": self.state,
            "place": place,  # 1 = next to run, None when running or ended
            "stage": self.stage,
            "fraction": round(self.fraction(), 4),
            "eta_seconds": None if eta is None else round(eta, 1),
            "error": self.error,
        }


class Jobs:
    """The queue and its one worker: jobs run one at a time, in upload order, on one loaded model."""

    def __init__(self, defaults: argparse.Namespace, root: Path):
        self.defaults, self.root = defaults, root
        self.jobs: dict[str, Job] = {}
        self.waiting: list[str] = []  # job ids in upload order
        self.lock = threading.Lock()
        self.wake: queue.Queue[str] = queue.Queue()
        self.models: dict = {}  # infer.map_song's cache: the model stays loaded between songs
        self.worker = threading.Thread(target=self._work, name="mapper", daemon=True)
        self.worker.start()

    def new_folder(self) -> tuple[str, Path]:
        job_id = secrets.token_hex(8)
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def submit(self, job: Job) -> int:
        """Queue a job -> its place (1 = next)."""
        with self.lock:
            if len(self.waiting) >= MAX_QUEUE:
                raise QueueFull(f"{MAX_QUEUE} songs are already waiting: try again when one is done")
            self.jobs[job.id] = job
            self.waiting.append(job.id)
            place = len(self.waiting)
        self.wake.put(job.id)
        return place

    def place(self, job: Job) -> int | None:
        with self.lock:
            return self.waiting.index(job.id) + 1 if job.id in self.waiting else None

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def _work(self) -> None:
        while True:
            try:
                self.wake.get(timeout=60)
            except queue.Empty:
                pass
            self.sweep()
            while True:
                with self.lock:
                    if not self.waiting:
                        break
                    job = self.jobs[self.waiting.pop(0)]
                self._run(job)

    def _run(self, job: Job) -> None:
        job.state, job.started = "running", time.monotonic()
        job.report("song and tempo", 0, 1)
        try:
            args = job_args(self.defaults, job)
            mapped = infer.map_song(args, job.report, self.models)
            print(f"{job.label}: {mapped.laps.line()}")
            job.result = level_result(mapped, job)
            job.state = "done"
        except infer.UsageError as e:
            job.error, job.state = str(e).replace(str(job.folder) + "/", ""), "failed"
        except Exception as e:  # noqa: BLE001 - the page gets one line; the console the traceback
            traceback.print_exc()
            job.error, job.state = f"{job.label}: mapping failed ({type(e).__name__}: {e})", "failed"
        job.ended = time.monotonic()

    def sweep(self) -> None:
        """Remove the files of jobs that ended over KEEP_SECONDS ago."""
        now = time.monotonic()
        with self.lock:
            old = [j for j in self.jobs.values() if j.ended and now - j.ended > KEEP_SECONDS]
            for job in old:
                del self.jobs[job.id]
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)


class QueueFull(Exception):
    pass


def job_args(defaults: argparse.Namespace, job: Job) -> argparse.Namespace:
    """infer.py's arguments for one job: the server's own, with the page's choices and this job's files."""
    args = argparse.Namespace(**vars(defaults))
    args.song, args.output, args.serve, args.preview = str(job.song), str(job.folder / LEVEL_NAME), False, False
    args.song_name = args.song_author = args.cover = None  # the song's tags, else the upload's name
    for key, value in job.options.items():
        setattr(args, key, value)
    return args


def level_result(mapped: infer.Mapped, job: Job) -> dict:
    """What the page shows of a finished level: the tempo found, each difficulty's headline figures and
    its notes in seconds of the level's song (which the page plays)."""
    level = load_level(mapped.path)
    (job.folder / "song.egg").write_bytes(read_level_file(level.path, level.song_filename))
    onsets = song_onsets(level)
    difficulties = {}
    for name, objects in mapped.objects.items():
        notes = objects.notes
        card = scorecard(notes, mapped.beats, onsets)

        def seconds(beats: list[float]) -> list[float]:
            return [round(float(t), 4) for t in mapped.beats.seconds_at(beats)] if beats else []

        walls, arcs = objects.obstacles, objects.arcs
        difficulties[name] = {
            # [[seconds, ...fields]] each sorted by time, in seconds of the level's song
            "notes": [[t, n.x, n.y, n.color, n.direction] for t, n in zip(seconds([n.beat for n in notes]), notes)],
            "bombs": [[t, b.x, b.y] for t, b in zip(seconds([b.beat for b in objects.bombs]), objects.bombs)],
            "walls": [
                [t, end, w.x, w.y, w.width, w.height]
                for t, end, w in zip(
                    seconds([w.beat for w in walls]), seconds([w.beat + w.duration for w in walls]), walls
                )
            ],
            # arcs: [[head seconds, x, y, tail seconds, x, y, colour]]; chains: [[head seconds, x, y, tail
            # seconds, tail x, tail y, slices, colour]]
            "arcs": [
                [h, a.head.x, a.head.y, t, a.tail.x, a.tail.y, a.head.color]
                for h, t, a in zip(seconds([a.head.beat for a in arcs]), seconds([a.tail.beat for a in arcs]), arcs)
            ],
            "chains": [
                [h, c.head.x, c.head.y, t, c.tail_x, c.tail_y, c.slices, c.head.color]
                for h, t, c in zip(
                    seconds([c.head.beat for c in objects.chains]),
                    seconds([c.tail_beat for c in objects.chains]),
                    objects.chains,
                )
            ],
            "scores": {
                "notes": card["notes"],
                "notes per second": round(card["nps"], 2),
                "listening lift": round(card.get("listening_lift", 0.0), 2),
                "parity errors per swing": round(card["parity_errors_per_swing"], 3),
                "grid coverage": round(card["grid_coverage"], 2),
            }
            | {kind: count for kind, count in objects.counts().items() if kind != "notes" and count},
        }
    tempo = mapped.tempo
    line = infer.tempo_line(tempo)
    return {
        "tempo": {
            "bpm": round(tempo.bpm, 3),
            "first_beat": round(tempo.first_beat, 3),
            "tracker": tempo.tracker,
            "confidence": round(tempo.confidence, 2),
            "changes": tempo.beats is not None,
            "line": line.split("\n")[0],
            "warning": line.split("\n", 1)[1].removeprefix("warning: ") if "\n" in line else "",
        },
        "difficulties": difficulties,
        "download": f"/jobs/{job.id}/{LEVEL_NAME}",
        "download_name": job.song.stem + ".zip",
    }


def safe_stem(name: str) -> str:
    """A file stem made from the client's file name: letters, digits, spaces and -_.() only."""
    stem = re.sub(r"[^\w\-. ()]+", "_", Path(name.replace("\\", "/")).stem, flags=re.ASCII).strip(" ._")
    return stem[:80] or "song"


def page_config(defaults: argparse.Namespace) -> dict:
    """What the page needs to build its form: the choices and limits infer.py has."""
    return {
        "difficulties": list(DIFFICULTIES),
        "default_difficulties": list(defaults.difficulty),
        "lights": list(LIGHT_MODES),
        "default_lights": defaults.lights,
        # the switches for bombs, walls, arcs and chains, on where the server's model writes them by default
        "objects": {
            kind + "s": kind in infer.chosen_kinds(defaults, infer.model_info(defaults.model))
            for kind in infer.SWITCHES
        },
        "song_types": list(SONG_TYPES),
        "min_seconds": infer.MIN_SONG_SECONDS,
        "max_minutes": infer.MAX_SONG_MINUTES,
        "max_bytes": infer.MAX_SONG_BYTES,
    }


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(defaults: argparse.Namespace, root: Path) -> Starlette:
    """The ASGI app over a queue whose files live under root."""
    jobs = Jobs(defaults, root)
    config = page_config(defaults)
    page = PAGE.read_text().replace("/*CONFIG*/{}", json.dumps(config))

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def submit(request: Request) -> Response:
        declared = int(request.headers.get("content-length") or 0)
        if declared > infer.MAX_SONG_BYTES + (1 << 20):
            limit = infer.MAX_SONG_BYTES >> 20
            return error(f"upload: {declared / 2**20:.0f} MiB; a song may be at most {limit} MiB", 413)
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as e:  # noqa: BLE001 - a malformed form body
            return error(f"upload: not a readable form ({e})")
        upload = form.get("song")
        if upload is None or isinstance(upload, str) or not upload.filename:
            return error("upload: no song file in the form")
        label = Path(upload.filename.replace("\\", "/")).name
        suffix = Path(label).suffix.lower()
        if suffix not in SONG_TYPES:
            return error(f"{label}: not a song file this mapper reads ({', '.join(SONG_TYPES)})")
        try:
            options = form_options(form, defaults)
        except ValueError as e:
            return error(str(e))
        job_id, folder = jobs.new_folder()
        song = folder / (safe_stem(label) + suffix)
        written = 0
        with song.open("wb") as out:
            while chunk := await upload.read(UPLOAD_CHUNK):
                written += len(chunk)
                if written > infer.MAX_SONG_BYTES:
                    break
                out.write(chunk)
        if written > infer.MAX_SONG_BYTES:
            shutil.rmtree(folder, ignore_errors=True)
            return error(f"{label}: over {infer.MAX_SONG_BYTES >> 20} MiB; a song may be at most that", 413)
        try:
            await run_in_threadpool(infer.read_song, str(song))  # the size, length and format checks infer.py makes
        except infer.UsageError as e:
            shutil.rmtree(folder, ignore_errors=True)
            return error(str(e).replace(str(song), label))
        job = Job(job_id, folder, song, label, options)
        try:
            place = jobs.submit(job)
        except QueueFull as e:
            shutil.rmtree(folder, ignore_errors=True)
            return error(str(e), 503)
        return JSONResponse(job.status(place), status_code=202)

    def found(request: Request) -> Job | None:
        return jobs.get(request.path_params["job_id"])

    async def status(request: Request) -> Response:
        job = found(request)
        return (
            error("no such job (finished jobs are kept for an hour)", 404)
            if job is None
            else JSONResponse(job.status(jobs.place(job)))
        )

    async def events(request: Request) -> Response:
        job = found(request)
        if job is None:
            return error("no such job (finished jobs are kept for an hour)", 404)

        async def stream():
            while True:
                state = job.status(jobs.place(job))
                yield f"data: {json.dumps(state)}\n\n"
                if state["state"] in ("done", "failed") or await request.is_disconnected():
                    return
                await asyncio.sleep(EVENT_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def result(request: Request) -> Response:
        job = found(request)
        if job is None or job.state != "done":
            return error("no level (yet) for this job", 404)
        return JSONResponse(job.result)

    async def level(request: Request) -> Response:
        job = found(request)
        if job is None or job.state != "done":
            return error("no level (yet) for this job", 404)
        return FileResponse(job.folder / LEVEL_NAME, media_type="application/zip", filename=job.result["download_name"])

    async def song(request: Request) -> Response:
        job = found(request)
        if job is None or job.state != "done":
            return error("no level (yet) for this job", 404)
        return FileResponse(job.folder / "song.egg", media_type="audio/ogg")

    routes = [
        Route("/", index),
        Route("/jobs", submit, methods=["POST"]),
        Route("/jobs/{job_id:str}", status),
        Route("/jobs/{job_id:str}/events", events),
        Route("/jobs/{job_id:str}/result", result),
        Route(f"/jobs/{{job_id:str}}/{LEVEL_NAME}", level),
        Route("/jobs/{job_id:str}/song.egg", song),
    ]
    app = Starlette(routes=routes)
    app.state.jobs = jobs
    return app


def form_options(form, defaults: argparse.Namespace) -> dict:
    """The page's choices -> infer.py arguments, checked as infer.py's parser checks them."""
    options: dict = {}
    difficulties = [d for d in form.getlist("difficulty") if isinstance(d, str)]
    if difficulties:
        unknown = [d for d in difficulties if d not in DIFFICULTIES]
        if unknown:
            raise ValueError(f"difficulty: {unknown[0]!r} is none of {', '.join(DIFFICULTIES)}")
        options["difficulty"] = list(dict.fromkeys(difficulties))
    if form.get("objects_chosen"):  # the page sends the kinds ticked, and this field to say it did
        ticked = set(form.getlist("objects"))
        unknown = ticked - {kind + "s" for kind in infer.SWITCHES}
        if unknown:
            raise ValueError(f"objects: {sorted(unknown)[0]!r} is none of bombs, walls, arcs, chains")
        options |= {kind + "s": kind + "s" in ticked for kind in infer.SWITCHES}
    lights = form.get("lights")
    if lights:
        if lights not in LIGHT_MODES:
            raise ValueError(f"lights: {lights!r} is none of {', '.join(LIGHT_MODES)}")
        options["lights"] = lights
    for key, check in (("bpm", lambda v: v > 0), ("offset", lambda v: v >= 0)):
        text = (form.get(key) or "").strip()
        if text:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{key}: {text!r} is not a number") from None
            if not math.isfinite(value) or not check(value):
                raise ValueError(f"{key}: {text} is out of range (BPM > 0, offset >= 0 seconds)")
            options[key] = value
    return options


def serve(args: argparse.Namespace) -> int:
    """infer.py --serve: check the model, then serve the page until Ctrl+C."""
    import uvicorn

    args.model = args.model or infer.default_model()
    infer.model_info(args.model)  # a missing or foreign model fails now, not at the first upload
    root = Path(tempfile.mkdtemp(prefix="automapper-web-"))
    try:
        app = create_app(args, root)
        print(f"serving the automapper on http://{args.host}:{args.port}/ (model {args.model}; Ctrl+C stops it)")
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
