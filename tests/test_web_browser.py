"""The web page in a real browser: upload -> progress -> preview with sound -> download, in headless Chromium."""

import shutil
import socket
import threading
import time
import zipfile

import pytest

import infer
from maps import load_level
from web import app as web

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no headless browser: install Debian's chromium and chromium-driver to run the browser test",
)
NOTE_COLOURS = ((0xE5, 0x38, 0x3B), (0x2D, 0x7F, 0xF9))  # the page's red and blue notes


@pytest.fixture
def server(model_dir, tmp_path):
    """The page served by uvicorn on a free 127.0.0.1 port, in a thread."""
    import uvicorn

    defaults = infer.parse_args(["--serve", "--model", str(model_dir), "--difficulty", "Expert"])
    root = tmp_path / "jobs"
    root.mkdir()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(web.create_app(defaults, root), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--autoplay-policy=no-user-gesture-required")  # play() from the test, no click
    options.add_argument("--window-size=900,1300")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.downloads = tmp_path / "downloads"
    driver.downloads.mkdir()
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(driver.downloads)})
    yield driver
    driver.quit()


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def note_pixels(driver) -> int:
    """Canvas pixels in the note colours, read from the canvas itself."""
    colours = [list(c) for c in NOTE_COLOURS]
    script = """
        const c = document.getElementById('lanes'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
          for (const [r, g, b] of arguments[0])
            if (Math.abs(d[i] - r) < 8 && Math.abs(d[i + 1] - g) < 8 && Math.abs(d[i + 2] - b) < 8) n++;
        return n;"""
    return driver.execute_script(script, colours)


def test_upload_progress_preview_and_download_in_chromium(server, browser, song, tmp_path):
    from selenium.webdriver.common.by import By

    by_id = lambda name: browser.find_element(By.ID, name)  # noqa: E731
    browser.get(server)
    by_id("file").send_keys(str(song))
    assert by_id("drop-text").text == song.name
    by_id("go").click()
    stages = set()

    def ended():
        stages.add(by_id("progress-text").text.split(" · ")[0])
        return by_id("progress-text").text in ("Done", "Failed")

    wait_for(ended, 120, "the mapping to end")
    assert by_id("progress-text").text == "Done", by_id("job-error").text
    assert stages & set(infer.STAGES), stages  # the stages streamed from the run were shown
    assert "BPM" in by_id("tempo").text and by_id("scores").text.startswith("Expert")
    wait_for(lambda: browser.execute_script("return document.getElementById('audio').readyState") >= 2, 30, "audio")
    # seek to just before the first note: the preview draws it in its lanes, in the note colours
    first = browser.execute_script("return level.difficulties.Expert.notes[0][0]")
    browser.execute_script("document.getElementById('audio').currentTime = arguments[0] - 0.5", first)
    wait_for(lambda: browser.execute_script("return window.preview.drawn") > 0, 10, "notes on the canvas")
    assert note_pixels(browser) > 100
    # play: the song's clock runs and the preview follows it; pause stops it
    by_id("play").click()
    start = browser.execute_script("return document.getElementById('audio').currentTime")
    wait_for(
        lambda: browser.execute_script("return document.getElementById('audio').currentTime") > start + 0.5,
        10,
        "the song to play",
    )
    by_id("play").click()
    paused = browser.execute_script("return document.getElementById('audio').currentTime")
    time.sleep(0.5)
    assert browser.execute_script("return document.getElementById('audio').currentTime") == paused
    assert "AI" in by_id("result-panel").text
    by_id("download").click()
    zips = wait_for(lambda: list(browser.downloads.glob("*.zip")), 20, "the download")
    assert zips[0].name == song.with_suffix(".zip").name
    with zipfile.ZipFile(zips[0]) as archive:
        assert {"Info.dat", "ExpertStandard.dat"} <= set(archive.namelist())
    assert [d.difficulty for d in load_level(zips[0]).difficulties] == ["Expert"]


def test_a_bad_upload_shows_infer_py_message_on_the_page(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "not a song.mp3"
    bad.write_bytes(b"ID3 but nothing else")
    browser.get(server)
    browser.find_element(By.ID, "file").send_keys(str(bad))
    browser.find_element(By.ID, "go").click()
    message = wait_for(lambda: browser.find_element(By.ID, "form-error").text, 20, "the error line")
    assert message.startswith("not a song.mp3: unreadable audio")
