"""Collect Beat Saber levels from BeatSaver for training, politely and resumably.

    python scrape.py --out data/maps --count 1000 [--min-rating 0.75] [--min-upvotes 5] [--since 2022-01-01]

Pages BeatSaver's search sorted by rating, judges each map document before downloading
(no automapper or declared AI, rating and upvotes at least the flags, a Standard
difficulty that needs neither Noodle nor Mapping Extensions), downloads the rest into
OUT/<id>.zip and keeps a zip only if maps.py finds a trainable difficulty in it. Every
decision is appended to OUT/manifest.jsonl, so a re-run resumes where the last stopped.
Imports nothing of the project but maps.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path

import requests
from tqdm import tqdm

from maps import HelpFormatter, atomic_file, judge_level

USER_AGENT = "beatsaber-automapper-scraper/1.0 (training-data collector; honours --rate and Retry-After)"
MANIFEST = "manifest.jsonl"
PARTIAL_SUFFIX = ".part"
BLOCKING_DIFF_MODS = ("ne", "me")  # per-difficulty flags: Noodle Extensions, Mapping Extensions


class FetchError(Exception):
    """A request that still failed after its retries; the message says why. `permanent`
    errors (HTTP 4xx) are final; the others (5xx, timeouts, lost connections) may pass later."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class RateLimiter:
    """At most `rate` requests per second over all threads, and none during a server-ordered pause."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next_slot = 0.0
        self.paused_until = 0.0
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.lock:
                now = time.monotonic()
                start = max(self.next_slot, self.paused_until)
                if start <= now:
                    self.next_slot = now + self.interval
                    return
            # woken early on purpose: a pause ordered meanwhile must hold this thread too
            time.sleep(min(start - now, 0.05))
        raise KeyboardInterrupt

    def pause(self, seconds: float) -> None:
        with self.lock:
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class Client:
    """GET with the rate limit, Retry-After on 429, and exponential backoff on 5xx, timeouts and connection errors."""

    def __init__(self, rate: float, retries: int, backoff: float, timeout: float, stop: threading.Event):
        self.limiter = RateLimiter(rate)
        self.retries, self.backoff, self.timeout, self.stop = retries, backoff, timeout, stop
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def get(self, url: str, **kwargs) -> requests.Response:
        problem = "no attempt"
        for attempt in range(self.retries + 1):
            self.limiter.wait(self.stop)
            try:
                response = self.session.get(url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = f"{type(e).__name__}"
            else:
                if response.status_code == 429:
                    delay = _retry_after(response, self.backoff * 2**attempt)
                    self.limiter.pause(delay)
                    problem = f"HTTP 429 (waited {delay:g} s)"
                    response.close()
                    continue
                if response.status_code < 500:
                    if response.status_code >= 400:
                        response.close()
                        raise FetchError(f"HTTP {response.status_code}", permanent=True)
                    return response
                problem = f"HTTP {response.status_code}"
                response.close()
            if attempt < self.retries:
                self.limiter.pause(self.backoff * 2**attempt)
        raise FetchError(f"{problem} after {self.retries + 1} attempts")

    def get_json(self, url: str, **kwargs) -> dict:
        """The JSON object at url; a malformed body is retried like a server error."""
        problem = ""
        for attempt in range(self.retries + 1):
            response = self.get(url, **kwargs)
            try:
                doc = response.json()
                if isinstance(doc, dict):
                    return doc
                problem = "JSON is not an object"
            except ValueError:
                problem = "malformed JSON"
            if attempt < self.retries:
                self.limiter.pause(self.backoff * 2**attempt)
        raise FetchError(f"{problem} after {self.retries + 1} attempts")


def _retry_after(response: requests.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        when = datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
    except ValueError:
        return default
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# ---------------------------------------------------------------- judging map documents


def judge_document(doc: dict, min_rating: float, min_upvotes: int, since: datetime | None) -> str | None:
    """Why this BeatSaver map document is rejected before download, or None to download it."""
    stats, versions = doc.get("stats") or {}, doc.get("versions") or []
    if doc.get("automapper") is True:
        return "automapper"
    if doc.get("declaredAi", "None") != "None":  # the API's string "None" marks human-made maps
        return "declared AI"
    reason = judge_numbers(
        stats.get("score"), stats.get("upvotes"), doc.get("uploaded"), min_rating, min_upvotes, since
    )
    if reason:
        return reason
    if not versions or not versions[0].get("downloadURL"):
        return "no downloadable version"
    standard = [d for d in versions[0].get("diffs") or [] if d.get("characteristic") == "Standard"]
    if not standard:
        return "no Standard difficulty"
    if all(any(d.get(mod) for mod in BLOCKING_DIFF_MODS) for d in standard):
        return "every Standard difficulty needs Noodle/Mapping Extensions"
    return None


def judge_numbers(score, upvotes, uploaded, min_rating: float, min_upvotes: int, since: datetime | None) -> str | None:
    """The rules the flags set: rating, upvotes, upload date (also re-checked by --filter-only)."""
    if not isinstance(score, (int, float)) or score < min_rating:
        return "rating below --min-rating"
    if not isinstance(upvotes, int) or upvotes < min_upvotes:
        return "upvotes below --min-upvotes"
    uploaded_at = _parse_time(uploaded)
    if since is not None and (uploaded_at is None or uploaded_at < since):
        return "uploaded before --since"
    return None


def _parse_time(value) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def metadata(doc: dict) -> dict:
    """What a later training run may want to know about the map, from its document."""
    meta, stats = doc.get("metadata") or {}, doc.get("stats") or {}
    version = (doc.get("versions") or [{}])[0]
    return {
        "hash": version.get("hash"),
        "name": doc.get("name"),
        "song_name": meta.get("songName"),
        "song_author": meta.get("songAuthorName"),
        "mapper": meta.get("levelAuthorName") or (doc.get("uploader") or {}).get("name"),
        "bpm": meta.get("bpm"),
        "duration": meta.get("duration"),
        "score": stats.get("score"),
        "upvotes": stats.get("upvotes"),
        "downvotes": stats.get("downvotes"),
        "tags": doc.get("tags") or [],
        "uploaded": doc.get("uploaded"),
        "difficulties": [
            {k: d.get(k) for k in ("characteristic", "difficulty", "nps", "notes")} for d in version.get("diffs") or []
        ],
    }


def check_zip(path: Path) -> str | None:
    """Why a downloaded level zip cannot train, or None. Read in memory by maps.py, never extracted."""
    report = judge_level(path)
    if report.error:
        return report.error
    if not any(reason is None for _, _, reason in report.difficulties):
        reasons = sorted({reason for _, _, reason in report.difficulties}) or ["no difficulties"]
        return f"no trainable difficulty ({'; '.join(reasons)})"
    return None


# ---------------------------------------------------------------- manifest


class Manifest:
    """OUT/manifest.jsonl: one JSON object per decision, appended and flushed as made.

    Later lines win for an id. A line cut short by a kill is dropped on opening, so the
    file always stays valid JSON lines.
    """

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        if path.exists():
            data = path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            if len(whole) != len(data):
                path.write_bytes(whole)
            for line in whole.splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["id"])] = entry
                except (ValueError, KeyError, TypeError):
                    continue

    def record(self, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one append per decision
            finally:
                os.close(fd)
            self.entries[str(entry["id"])] = entry

    def count(self, status: str) -> int:
        with self.lock:
            return sum(e.get("status") == status for e in self.entries.values())


# ---------------------------------------------------------------- scraping


class Scraper:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(f"*{PARTIAL_SUFFIX}"):  # left by a killed run
            stale.unlink()
        self.manifest = Manifest(self.out / MANIFEST)
        self.stop = threading.Event()
        self.client = Client(args.rate, args.retries, args.backoff, args.timeout, self.stop)
        self.since = args.since
        self.progress = tqdm(desc="maps", unit="map", disable=args.quiet)
        self.considered = 0

    def log(self, message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def _update_progress(self) -> None:
        self.progress.set_postfix(
            ok=self.manifest.count("ok"), rejected=self.manifest.count("rejected"), considered=self.considered
        )

    def documents(self):
        """Map documents from the search pages in order; a page that keeps failing is skipped."""
        params = {"sortOrder": "Rating", "minRating": self.args.min_rating}
        if self.since is not None:
            params["from"] = self.since.strftime("%Y-%m-%dT%H:%M:%SZ")
        for page in range(self.args.max_pages):
            url = f"{self.args.api_url.rstrip('/')}/search/text/{page}"
            try:
                docs = self.client.get_json(url, params=params).get("docs")
            except FetchError as e:
                self.log(f"skipped search page {page}: {e}")
                continue
            if not docs:
                return
            yield from (d for d in docs if isinstance(d, dict) and d.get("id"))

    def decide(self, doc: dict) -> None:
        """Download and check one map that passed the document rules; records the outcome."""
        map_id = str(doc["id"])
        entry = {"id": map_id, **metadata(doc)}
        path = self.out / f"{map_id}.zip"
        try:
            self.download(doc["versions"][0]["downloadURL"], path)
        except FetchError as e:
            if e.permanent:
                self.manifest.record(entry | {"status": "rejected", "reason": f"download failed: {e}"})
            else:  # left undecided: the next run tries again
                self.log(f"skipped map {map_id} for now: download failed: {e}")
            return
        reason = check_zip(path)
        if reason:
            path.unlink(missing_ok=True)
            self.manifest.record(entry | {"status": "rejected", "reason": reason})
        else:
            self.manifest.record(entry | {"status": "ok", "path": path.name})

    def download(self, url: str, path: Path) -> None:
        """Stream url to path through a temp file; nothing is left at path unless complete."""
        try:
            with self.client.get(url, stream=True) as response, atomic_file(path, PARTIAL_SUFFIX) as out:
                for block in response.iter_content(1 << 16):
                    if self.stop.is_set():
                        raise KeyboardInterrupt
                    out.write(block)
        except requests.RequestException as e:
            raise FetchError(f"transfer broke off ({type(e).__name__})") from None

    def run(self) -> int:
        args, pending = self.args, set()
        with ThreadPoolExecutor(args.workers) as pool:
            try:
                for doc in self.documents():
                    if self.manifest.count("ok") >= args.count:
                        break
                    map_id = str(doc["id"])
                    if map_id in self.manifest.entries:
                        continue  # decided by an earlier run
                    self.considered += 1
                    reason = judge_document(doc, args.min_rating, args.min_upvotes, self.since)
                    if reason:
                        self.manifest.record({"id": map_id, **metadata(doc), "status": "rejected", "reason": reason})
                        self._update_progress()
                        continue
                    # never more downloads in flight than workers, nor than could still be needed
                    while pending and len(pending) >= min(args.workers, args.count - self.manifest.count("ok")):
                        pending = self._collect(pending)
                    if self.manifest.count("ok") >= args.count:
                        break
                    pending.add(pool.submit(self.decide, doc))
                while pending:
                    pending = self._collect(pending)
            except KeyboardInterrupt:
                self.stop.set()
                self.log("interrupted: the manifest holds every decision made so far; run again to resume")
                wait(pending)
                return 130
        ok = self.manifest.count("ok")
        self.log(f"{ok} maps ok in {self.out} (wanted {args.count}); {self.manifest.count('rejected')} rejected")
        return 0

    def _collect(self, pending: set) -> set:
        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for future in done:
            future.result()
            self.progress.update()
        self._update_progress()
        return pending


def filter_only(args: argparse.Namespace) -> int:
    """Re-apply the checks to the zips already in OUT, with no network; record what changed.

    A zip that now fails (maps.py's checks, or the flag rules on its recorded metadata)
    is deleted and recorded as rejected; a zip the manifest does not know is recorded.
    """
    out = Path(args.out)
    manifest = Manifest(out / MANIFEST)
    since, changed = args.since, 0
    for path in sorted(out.glob("*.zip")):
        entry = manifest.entries.get(path.stem, {"id": path.stem})
        reason = check_zip(path)
        if not reason and "score" in entry:
            numbers = (entry.get("score"), entry.get("upvotes"), entry.get("uploaded"))
            reason = judge_numbers(*numbers, args.min_rating, args.min_upvotes, since)
        if reason:
            path.unlink()
            manifest.record(entry | {"status": "rejected", "reason": reason, "path": None})
            changed += 1
        elif entry.get("status") != "ok":
            manifest.record(entry | {"status": "ok", "path": path.name})
            changed += 1
    print(f"{manifest.count('ok')} maps ok in {out}; {changed} manifest entries changed")
    return 0


def _date(text: str) -> datetime | None:
    """--since: YYYY-MM-DD (UTC), or '' for no date rule."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Collect human-made Beat Saber maps from BeatSaver for training. Every map considered is "
        "recorded in OUT/manifest.jsonl; re-running resumes without re-downloading or re-judging anything.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default="data/maps", help="folder for <id>.zip files and manifest.jsonl")
    p.add_argument("--count", type=int, default=1000, help="stop once this many maps are ok in OUT")
    p.add_argument("--min-rating", type=float, default=0.75, help="lowest BeatSaver score (0..1) accepted")
    p.add_argument("--min-upvotes", type=int, default=5, help="fewest upvotes accepted")
    p.add_argument(
        "--since", type=_date, default="2022-01-01", help="only maps uploaded on or after this date ('' for all)"
    )
    p.add_argument("--api-url", default="https://api.beatsaver.com", help="BeatSaver API base URL")
    p.add_argument("--rate", type=float, default=1.0, help="most requests per second, downloads included")
    p.add_argument("--workers", type=int, default=2, help="downloads in parallel (all within --rate)")
    p.add_argument("--retries", type=int, default=4, help="retries of a failing request before skipping it")
    p.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds, doubling each time")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a server response")
    p.add_argument("--max-pages", type=int, default=100_000, help="search pages to read at most")
    p.add_argument(
        "--filter-only",
        action="store_true",
        help="no network: re-check the zips already in OUT with the current rules and flags, delete the ones "
        "that now fail, and record the changes in the manifest",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.rate <= 0 or args.workers < 1 or args.count < 0:
        p.error("--rate must be > 0, --workers >= 1 and --count >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return filter_only(args) if args.filter_only else Scraper(args).run()


if __name__ == "__main__":
    sys.exit(main())
