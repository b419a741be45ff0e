"""The page in a real headless browser (Debian's chromium) against a small DAQ of processes:
core, aggregator, storage, a simulated board, the monitor and the web server."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from daq_procs import Daq, Proc
from playwright.sync_api import expect, sync_playwright

from larpixdaq.commands.pipeline import ROUTINE_RESULTS_DIR
from larpixdaq.runcontrol.actions import action
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.credentials import find_credential
from larpixdaq.runcontrol.testing import CoreProcess, wait_for

CHROMIUM = os.environ.get("LARPIX_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).is_file():
    _why = (f"{CHROMIUM} not found: install Debian's chromium (`make test` does it as root "
            "or with passwordless sudo)")
    if os.environ.get("LARPIX_REQUIRE_BROWSER") == "1":
        pytest.fail(_why, pytrace=False)  # CI asked for every test: fail, never skip
    pytestmark = pytest.mark.skip(reason=_why)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# What the page shows arrives asynchronously (a command's answer, the state the web server
# polls every 0.3-1 s, the monitor's feed): every expect() waits for it, and the bound is
# generous because the suite runs on 2 cores with one kept busy. Playwright's default is 5 s.
expect.set_options(timeout=15_000)


@pytest.fixture
def web_daq(tmp_path):
    (tmp_path / "routines").mkdir()
    d = Daq(tmp_path, boards=1, rate=20_000, routines=tmp_path / "routines")
    try:
        d.start()
        c = ["--core", d.core.endpoint]
        d._proc("monitor", ["monitor", *c])
        web = d._proc("web", ["web", *c, "--port", "0", "--interval", "0.5"])
        url = re.search(r"http://\S+", web.first_line).group(0)
        wait_for(lambda: any(x["role"] == "monitor" for x in d.clients()), timeout=30,
                 interval=0.1)
        yield d, url
    finally:
        d.close()


@pytest.fixture
def page(tmp_path):
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1400, "height": 1700})
        try:
            yield ctx.new_page()
        finally:
            ctx.close()


def canvas_ink(page, canvas_id: str) -> int:
    """Pixels of a canvas that are neither blank nor the hit map's 'no hits' grey."""
    return page.evaluate("""(id) => {
        const c = document.getElementById(id);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            const [r, g, b, a] = [d[i], d[i+1], d[i+2], d[i+3]];
            const grey = r === 241 && g === 243 && b === 246;
            const white = r > 250 && g > 250 && b > 250;
            if (a === 0 || grey || white || (r === 0 && g === 0 && b === 0)) continue;
            n++;
        }
        return n;
    }""", canvas_id)


def canvas_colour(page, canvas_id: str, rgb: tuple[int, int, int]) -> int:
    """Pixels of a canvas drawn in one colour (any opacity: a line's antialiased edge, a
    translucent fill under it): a plot's data, apart from its axes and labels, which alone
    give some 3,000 pixels of ink."""
    return page.evaluate("""([id, rgb]) => {
        const c = document.getElementById(id);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i+3] && Math.abs(d[i] - rgb[0]) <= 8 && Math.abs(d[i+1] - rgb[1]) <= 8
                && Math.abs(d[i+2] - rgb[2]) <= 8) n++;
        }
        return n;
    }""", [canvas_id, list(rgb)])


LINE_BLUE = (0x25, 0x63, 0xEB)  # plots.js drawLine's data line and the fill under it
BAR_GREEN = (0x15, 0x80, 0x3D)  # plots.js drawHistogram's bars


def map_tip(page, x: float, y: float) -> str:
    """Place the pointer at (x, y) CSS pixels of the map canvas and read its tip ("" when
    hidden). Playwright measures the canvas when it moves the pointer (and waits for it to
    stand still); the tip is read in one step, as the page shows it."""
    page.locator("#hitmap").hover(position={"x": x, "y": y})
    return page.evaluate("""() => {
        const t = document.getElementById('hitmap-tip');
        return t.hidden ? '' : t.innerText;
    }""")


def hover_pixel(page, pixel: int) -> str:
    """Point at one pixel of the tile view (490 px, 7 px a pixel) and read the tip.

    The pointer is placed again until the tip names that pixel: the status lines above the
    map grow while a run goes on, and a line added between measuring the canvas and moving
    the pointer leaves the pointer off the map (the tip hides, as it should) or on another
    pixel (the tip names that one).
    """
    canvas = page.locator("#hitmap")

    def place() -> str:
        scale = canvas.bounding_box()["width"] / 490
        text = map_tip(page, ((pixel % 70) * 7 + 3.5) * scale, ((pixel // 70) * 7 + 3.5) * scale)
        return text if f"  pixel {pixel} (" in text else ""

    return wait_for(place, timeout=30, interval=0.3)


def login_link(url: str, core: str) -> str:
    """The link `larpix-daq up` prints: the page, logged in as the local expert."""
    cred = find_credential(core)
    return f"{url}login?user={cred.user}&token={cred.token}"


def test_run_from_the_page(web_daq, page, tmp_path):
    daq, url = web_daq
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(login_link(url, daq.core.endpoint))
    expect(page.get_by_test_id("who")).to_contain_text("(expert)")
    state = page.get_by_test_id("state")
    expect(state).to_have_text("STOP", timeout=10_000)
    expect(page.locator("#components tbody tr")).to_have_count(4, timeout=10_000)
    assert page.locator("#btn-begin_run").is_disabled()

    page.fill("#run-comment", "browser test")
    page.click("#btn-prepare_run")
    expect(state).to_have_text("READY", timeout=15_000)
    expect(page.locator("#btn-begin_run")).to_be_enabled()
    page.click("#btn-begin_run")
    expect(state).to_have_text("RUN", timeout=15_000)
    assert page.locator("#btn-prepare_run").is_disabled()

    # The monitor fills: a tile appears, the hit map and the rate plot get ink.
    expect(page.locator("#tile-select option")).to_have_count(1, timeout=15_000)
    wait_for(lambda: canvas_ink(page, "hitmap") > 2000, timeout=15, interval=0.3)
    wait_for(lambda: page.evaluate(
        "() => document.querySelectorAll('#recent tbody tr').length") > 10, timeout=30,
        interval=0.3)
    # a few seconds of rate history drawn in the plot; ADC values in the histogram
    wait_for(lambda: canvas_colour(page, "rateplot", LINE_BLUE) > 500, timeout=30, interval=0.3)
    wait_for(lambda: canvas_colour(page, "adcplot", BAR_GREEN) > 100, timeout=30, interval=0.3)

    # Hovering a pixel names it: its chip (the io_channel known once the monitor has seen the
    # chip's data), channel, rate and max (once the tile's maps are in the monitor's feed).
    def names_the_pixel(tip: str) -> bool:
        return bool(re.search(r"chip 1-\d+-\d+\s+channel \d+", tip)) and "max" in tip \
            and "rate" in tip

    wait_for(lambda: names_the_pixel(hover_pixel(page, 35 * 70 + 35)), timeout=60, interval=0.5)
    page.mouse.move(0, 0)

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000

    page.click("#btn-end_run")
    expect(state).to_have_text("STOP", timeout=20_000)
    expect(page.locator("#runs tbody tr").first).to_contain_text("browser test", timeout=10_000)
    expect(page.locator("#log")).to_contain_text("end_run")
    assert not errors, errors


class ConfigBoard(Component):
    """A board offering the configuration actions (software copy, chip, verify)."""

    role = "producer"

    def __init__(self, name, core):
        super().__init__(name, core, heartbeat_interval=0.05, core_timeout=0.5)
        self.soft = {"1-1-11": {"threshold_global": 255, "csa_enable": 1}}
        self.chip = {"1-1-11": {"threshold_global": 255, "csa_enable": 1}}

    @action
    def retrieve_configuration(self, chip: str):
        """The software copy of a chip's registers."""
        return {"registers": dict(self.soft[chip])}

    @action
    def send_configuration(self, updates: dict):
        """Change the software copy: {chip key: {register: value}}."""
        for key, regs in updates.items():
            self.soft[key].update(regs)
        return {"updated": sorted(updates)}

    @action
    def write_configuration(self, chip: str):
        """Write the software copy to the chip."""
        self.chip[chip] = dict(self.soft[chip])
        return {"written": chip}

    @action
    def read_configuration(self, chip: str):
        """Read the chip's registers back."""
        return {"registers": dict(self.chip[chip])}

    @action
    def validate_configuration(self, chip: str):
        """Compare the chip with the software copy."""
        diff = {r: [v, self.chip[chip].get(r)] for r, v in self.soft[chip].items()
                if self.chip[chip].get(r) != v}
        return {"match": not diff, "differences": diff}


@pytest.fixture
def config_daq(tmp_path):
    core = CoreProcess(tmp_path / "runs.sqlite").start()
    board = None
    web = Proc(["web", "--core", core.endpoint, "--port", "0", "--interval", "0.3"],
               tmp_path / "web.log")
    try:
        board = ConfigBoard("board-1", core.endpoint).start()
        assert board.wait_registered(30)
        web.start()
        url = re.search(r"http://\S+", web.first_line).group(0)
        yield board, login_link(url, core.endpoint)
    finally:
        web.stop()
        if board is not None:
            board.stop()
        core.terminate()


def test_configuration_editor_and_action_runner(config_daq, page, tmp_path):
    board, url = config_daq
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.fill("#config-chip", "1-1-11", timeout=10_000)
    page.click("text=Software copy")
    expect(page.locator("#config-regs tbody tr")).to_have_count(2)
    page.fill("#config-regs input[data-reg=threshold_global]", "30")
    page.click("text=Apply edits")
    wait_for(lambda: board.soft["1-1-11"]["threshold_global"] == 30, timeout=30, interval=0.1)
    page.click("text=Verify")
    diff = page.locator("#config-regs td.diff")
    expect(diff).to_have_text("threshold_global")
    page.click("text=Write to chip")
    wait_for(lambda: board.chip["1-1-11"]["threshold_global"] == 30, timeout=30, interval=0.1)
    page.click("text=Verify")
    expect(diff).to_have_count(0)

    # The action runner builds its inputs from the action's parameters.
    page.select_option("#action-component", "board-1")
    page.select_option("#action-name", "read_configuration")
    expect(page.locator("#action-doc")).to_have_text("Read the chip's registers back.")
    page.fill("#action-params input[name=chip]", "1-1-11")
    page.click("#btn-invoke")
    expect(page.locator("#action-result")).to_contain_text('"threshold_global": 30')
    page.locator("#config-card").screenshot(path=str(tmp_path / "config.png"))
    assert not errors, errors


def test_configuration_and_routines_against_the_real_daq(web_daq, page, tmp_path):
    """The editor and the routine runner with the producer's real actions, through the
    core: software copy, edit, apply, verify (differs), write, verify (match); a routine
    run and one stopped from the page."""
    daq, url = web_daq
    chip = "1-1-11"
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(login_link(url, daq.core.endpoint))
    expect(page.locator("#components tbody tr")).to_have_count(4, timeout=10_000)
    card = page.locator("#config-card")
    expect(card).to_contain_text("configuration of chips on producer-1", timeout=10_000)
    page.fill("#config-chip", chip)
    card.get_by_role("button", name="Software copy").click()
    threshold = page.locator("#config-regs input[data-reg=threshold_global]")
    expect(threshold).to_have_count(1)
    before = int(threshold.input_value())
    new = 41 if before != 41 else 42
    threshold.fill(str(new))
    # A list register (one value per channel) is edited as numbers separated by spaces.
    trims = page.locator("#config-regs input[data-reg=pixel_trim_dac]")
    values = trims.input_value().split()
    assert len(values) == 64
    values[3] = str((int(values[3]) + 1) % 32)
    trims.fill(" ".join(values))
    card.get_by_role("button", name="Apply edits").click()
    result = page.locator("#config-result")
    expect(result).to_contain_text(f'"{chip}"')

    def software_copy() -> dict:
        return daq.op.retrieve_configuration(chip).wait().data["result"]["registers"]

    # The result box already named the chip (the software copy shown above): wait for the
    # edits themselves, not for the box.
    soft = wait_for(lambda: (c := software_copy())["threshold_global"] == new and c,
                    timeout=30, interval=0.3)
    assert soft["pixel_trim_dac"][3] == int(values[3])
    card.get_by_role("button", name="Verify").click()
    expect(page.locator("#config-regs td.diff")).to_have_text(["pixel_trim_dac",
                                                               "threshold_global"])
    expect(result).to_contain_text('"match": false')
    trims.fill("1 2 3")  # the wrong number of values: refused in the page, nothing sent
    card.get_by_role("button", name="Apply edits").click()
    expect(page.locator("#banner")).to_contain_text("pixel_trim_dac: give 64 whole numbers")
    page.locator("#banner button").click()
    trims.fill(" ".join(values))
    card.get_by_role("button", name="Write to chip").click()
    expect(result).to_contain_text('"written"')
    card.get_by_role("button", name="Verify").click()
    expect(result).to_contain_text('"match": true')
    expect(page.locator("#config-regs td.diff")).to_have_count(0)
    assert daq.op.validate_configuration(chip).wait().data["result"]["match"] is True
    card.screenshot(path=str(tmp_path / "config-real.png"))

    # A failing action shows the producer's own refusal, naming the chip it does not know.
    page.select_option("#action-component", "producer-1")
    page.select_option("#action-name", "read_configuration")
    page.fill("#action-params input[name=chip_keys]", "9-9-99")
    page.click("#btn-invoke")
    expect(page.locator("#action-result")).to_contain_text(
        "unknown chip(s) 9-9-99 on io_group 1", timeout=15_000)
    expect(page.locator("#banner")).to_contain_text("invoke")
    expect(page.locator("#log li.failed").filter(has_text="read_configuration").first
           ).to_contain_text("unknown chip(s) 9-9-99")
    page.locator("#banner button").click()

    # The routine runner: hello_world, its result in the command log.
    page.select_option("#action-component", "producer-1")
    page.select_option("#action-name", "run_routine")
    expect(page.locator("#routine-name option[value=hello_world]")).to_have_count(1)
    page.select_option("#routine-name", "hello_world")
    page.fill("#action-params input[name=name]", "browser")
    page.click("#btn-invoke")
    log = page.locator("#log")
    expect(log.locator("li.ok").filter(has_text="run_routine").first).to_contain_text(
        "Hello, browser!", timeout=15_000)
    expect(page.locator("#action-result")).to_contain_text('"status": "success"')

    # A routine that runs until stopped: Stop is enabled while it runs and stops it.
    (tmp_path / "routines" / "endless.py").write_text(
        "import time\n"
        "def routine(ctx):\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "        yield {'tick': 1}\n")
    assert daq.op.load_routines(tmp_path / "routines").wait().success
    stop = page.locator("#btn-stop-routine")
    expect(stop).to_be_disabled()
    page.select_option("#action-name", "list_routines")  # the runner asks for the list again
    page.select_option("#action-name", "run_routine")
    expect(page.locator("#routine-name option[value=endless]")).to_have_count(1)
    page.select_option("#routine-name", "endless")
    page.click("#btn-invoke")
    expect(stop).to_be_enabled(timeout=10_000)
    # Once it reports progress it is running in the producer (not merely sent).
    expect(log.locator("li.running").filter(has_text="endless").first).to_contain_text(
        "progress", timeout=10_000)
    stop.click()
    expect(page.locator("#action-result")).to_contain_text(
        "routine endless aborted: stopped by the operator", timeout=15_000)
    expect(log.locator("li.failed").filter(has_text="run_routine").first).to_contain_text(
        "stopped by the operator")
    expect(log.locator("li.ok").filter(has_text="stop_routine").first).to_contain_text(
        "routine endless asked to stop")
    expect(stop).to_be_disabled()
    assert daq.op.run_routine("hello_world").wait().success  # the producer goes on
    shot = tmp_path / "routines-real.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not errors, errors


def test_routine_results_table(web_daq, page, tmp_path):
    """A routine run from the page's form gets its row in the results table once it ends
    (newest first, with the files its producer wrote); an anonymous viewer reads it too."""
    daq, url = web_daq
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(login_link(url, daq.core.endpoint))
    expect(page.get_by_test_id("who")).to_contain_text("(expert)")
    rows = page.locator("#routine-results tbody tr")
    # the table is asked for when the producer's actions arrive: nothing kept yet
    expect(page.locator("#log li.ok").filter(has_text="routine_results")).not_to_have_count(
        0, timeout=15_000)
    expect(rows).to_have_count(0)

    page.select_option("#action-component", "producer-1")
    page.select_option("#action-name", "run_routine")
    expect(page.locator("#routine-name option[value=hello_world]")).to_have_count(1)
    page.select_option("#routine-name", "hello_world")
    for name in ("first", "second"):
        page.fill("#action-params input[name=name]", name)
        page.click("#btn-invoke")
        expect(page.locator("#action-result")).to_contain_text(f"Hello, {name}!",
                                                               timeout=15_000)
        expect(rows.first).to_contain_text(f"Hello, {name}!", timeout=15_000)
    expect(rows).to_have_count(2)
    newest = rows.first.locator("td")
    expect(newest.nth(1)).to_have_text("hello_world")
    expect(newest.nth(2)).to_have_text("producer-1")
    expect(newest.nth(3)).to_have_text("success")
    expect(rows.nth(1)).to_contain_text("Hello, first!")
    # the files named are the ones the producer wrote, newest first
    kept = sorted((daq.data / ROUTINE_RESULTS_DIR).glob("*-hello_world.json"), reverse=True)
    assert len(kept) == 2
    assert newest.nth(5).inner_text() == kept[0].name
    assert rows.nth(1).locator("td").nth(5).inner_text() == kept[1].name

    # a viewer (not logged in) reads the same table
    page.click("#btn-logout")
    expect(page.get_by_test_id("who")).to_contain_text("not logged in (viewer)")
    page.reload()
    expect(page.get_by_test_id("who")).to_contain_text("not logged in (viewer)")
    expect(rows).to_have_count(2, timeout=15_000)
    expect(rows.first).to_contain_text("Hello, second!")
    assert not errors, errors


@pytest.fixture
def short_sessions(tmp_path):
    """A core and a web server whose logins last 15 s; users of two roles."""
    from larpixdaq.runcontrol.policy import Role
    from larpixdaq.runcontrol.users import UserStore

    with UserStore(tmp_path / "runs.sqlite") as store:
        tokens = {"op": store.add_user("op", Role.OPERATOR)}
    core = CoreProcess(tmp_path / "runs.sqlite").start()
    web = Proc(["web", "--core", core.endpoint, "--port", "0", "--interval", "0.3",
                "--session-hours", str(15 / 3600)], tmp_path / "web.log")
    try:
        web.start()
        yield re.search(r"http://\S+", web.first_line).group(0), tokens
    finally:
        web.stop()
        core.terminate()


def test_login_csrf_and_session_expiry(short_sessions, page, tmp_path):
    url, tokens = short_sessions
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    who = page.get_by_test_id("who")
    expect(who).to_have_text("not logged in (viewer)", timeout=10_000)
    expect(page.get_by_test_id("state")).to_have_text("STOP", timeout=10_000)
    # Anonymous: the core refuses run control, and the page says why.
    page.click("#btn-prepare_run")
    expect(page.locator("#banner")).to_contain_text(
        "an anonymous client (viewer) may not prepare_run: it needs operator")
    page.locator("#banner button").click()

    # Log in through the form: a wrong token first, then the right one.
    page.click("#login-link")
    page.fill("#login-user", "op")
    page.fill("#login-token", "ldq_" + "w" * 43)
    page.click("#btn-login")
    expect(page.locator("#login-message")).to_contain_text(
        "login refused: unknown user op or wrong token")
    page.fill("#login-token", tokens["op"])
    page.click("#btn-login")
    expect(who).to_have_text("op (operator)", timeout=10_000)
    cookie = next(c for c in page.context.cookies() if c["name"] == "larpix_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("() => document.cookie") == ""  # not readable by scripts

    # A state-changing request without the session's CSRF token is refused.
    status = page.evaluate("""async () => (await fetch('/api/command/prepare_run', {
        method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'})).status""")
    assert status == 403
    expect(page.get_by_test_id("state")).to_have_text("STOP")
    # The page sends it: prepare goes through as op, and the log names op.
    page.fill("#run-comment", "logged in")
    page.click("#btn-prepare_run")
    expect(page.get_by_test_id("state")).to_have_text("READY", timeout=15_000)
    expect(page.locator("#log li.ok").filter(has_text="prepare_run").first).to_contain_text(
        "op: prepare_run done")

    # The session ends 15 s after the login: the next command is refused, the page says so.
    wait_for(lambda: page.evaluate("async () => (await fetch('/api/session')).json()")[
        "expired"], timeout=40, interval=0.5)
    page.click("#btn-end_run")
    expect(page.locator("#banner")).to_contain_text("your session has expired")
    expect(who).to_have_text("not logged in (viewer)")
    expect(page.get_by_test_id("state")).to_have_text("READY")
    page.screenshot(path=str(tmp_path / "expired.png"))
    assert not errors, errors


# --- the detector in the page: views, pixel states, configuration maps, triggers, runs ------

@pytest.fixture
def anode_daq(tmp_path):
    """One board of the 2x2 (io_group 1: module 1's first anode, 8 tiles) with a beam every
    0.3 s, the monitor knowing the 2x2, and the web server."""
    (tmp_path / "routines").mkdir()
    d = Daq(tmp_path, boards=1, rate=20_000, routines=tmp_path / "routines",
            producer_args=["--detector", "2x2", "--beam", "--beam-period", "0.3"])
    try:
        d.start()
        c = ["--core", d.core.endpoint]
        d._proc("monitor", ["monitor", *c, "--detector", "2x2"])
        web = d._proc("web", ["web", *c, "--port", "0", "--interval", "0.5"])
        url = re.search(r"http://\S+", web.first_line).group(0)
        wait_for(lambda: any(x["role"] == "monitor" for x in d.clients()), timeout=30,
                 interval=0.1)
        yield d, url
    finally:
        d.close()


def test_detector_views_pixel_states_triggers_and_runs(anode_daq, page, tmp_path):
    from larpixdaq.geometry import load_detector, standard_tile

    daq, url = anode_daq
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(login_link(url, daq.core.endpoint))
    expect(page.locator("link[rel=icon]")).to_have_attribute("href", "/static/favicon.svg")
    assert page.request.get(url + "favicon.ico").headers["content-type"].startswith("image/svg")
    state = page.get_by_test_id("state")
    expect(state).to_have_text("STOP", timeout=10_000)
    # mask one bonded channel of chip 1-1-11 in the software copy, before the run
    layout = standard_tile()
    channel = int(np.flatnonzero(layout.pixel_of[11] >= 0)[0])
    masked_pixel = int(layout.pixel_of[11, channel])
    assert daq.op.send_configuration({"1-1-11": {f"channel_mask[{channel}]": 1}}).wait().success
    page.click("#btn-prepare_run")
    expect(state).to_have_text("READY", timeout=15_000)
    page.click("#btn-begin_run")
    expect(state).to_have_text("RUN", timeout=15_000)

    # The tiles are named as the layout names them; io_channel 1's chips are on tile 1.
    det = load_detector("2x2")
    n_tiles = len({int(t) for t in det.locate(
        1, (det.keys[(det.keys >> 16) == 1] >> 8) & 0xFF, det.keys[(det.keys >> 16) == 1] & 0xFF,
        0).tile})
    expect(page.locator("#tile-select option")).to_have_count(n_tiles, timeout=20_000)
    expect(page.locator("#tile-select option").first).to_have_text(
        "io_group 1 tile 1 (module 1, anode 1)")
    wait_for(lambda: canvas_ink(page, "hitmap") > 5000, timeout=60, interval=0.3)
    # The top left pixel is chip 11's (the layout's orientation); the masked one says so.
    # Its io_channel is known once the monitor has seen data of chip 11 (until then 1-?-11).
    wait_for(lambda: "chip 1-1-11" in hover_pixel(page, 0), timeout=60, interval=0.5)
    expect(page.locator("#map-legend")).to_contain_text("masked")
    wait_for(lambda: "masked" in hover_pixel(page, masked_pixel), timeout=60, interval=0.5)

    # Triggers: the beam's TRIG words arrive and the page shows a trigger rate.
    wait_for(lambda: int(page.locator(".stat").filter(has_text="trigger words seen")
                         .locator(".v").inner_text()) > 0, timeout=60, interval=0.5)
    wait_for(lambda: canvas_colour(page, "trigplot", LINE_BLUE) > 50, timeout=30, interval=0.3)

    # ADC per channel: pedestal and noise maps on the same layout.
    page.select_option("#hitmap-mode", "adc_mean")
    wait_for(lambda: re.search(r"ADC mean \(pedestal\): \d", hover_pixel(page, 3 * 70 + 3)),
             timeout=60, interval=0.5)
    page.select_option("#hitmap-mode", "adc_width")
    assert "ADC width (noise)" in hover_pixel(page, 3 * 70 + 3)
    # Configuration on the layout: threshold_global per chip, the mask per channel.
    page.select_option("#hitmap-mode", "threshold_global")
    assert re.search(r"threshold_global \(per chip\): \d+ DAC", hover_pixel(page, 0))
    page.select_option("#hitmap-mode", "channel_mask")
    assert "channel_mask (1: masked): 1" in hover_pixel(page, masked_pixel)
    assert "channel_mask (1: masked): 0" in hover_pixel(page, 0)
    page.select_option("#hitmap-mode", "rate")
    page.locator("#monitor-card").screenshot(path=str(tmp_path / "tile.png"))

    # The anode view: the anode's tiles where they sit, pixel by pixel; a click opens one.
    page.click("[data-view=anode]")
    wait_for(lambda: page.evaluate("() => document.getElementById('hitmap').height") > 500,
             timeout=30, interval=0.2)
    wait_for(lambda: canvas_ink(page, "hitmap") > 20_000, timeout=60, interval=0.5)
    # a point inside the first row of tiles (half way down, 0.5, is the 6 px gap between the
    # second and third rows: the tip hides there)
    size = page.locator("#hitmap").bounding_box()
    x, y = size["width"] * 0.3, size["height"] * 0.15
    wait_for(lambda: "module 1, anode 1" in map_tip(page, x, y), timeout=30, interval=0.3)
    page.locator("#monitor-card").screenshot(path=str(tmp_path / "anode.png"))
    # The detector view: every tile of the 2x2 chip by chip, 8 (module, anode) panels.
    page.click("[data-view=detector]")
    wait_for(lambda: page.evaluate("() => document.getElementById('hitmap').width") > 600,
             timeout=30, interval=0.2)
    page.locator("#monitor-card").screenshot(path=str(tmp_path / "detector.png"))
    tile_view = page.locator("[data-view=tile]")

    def open_tile() -> bool:
        # placed by Playwright on the canvas as it is now; clicked again if a status line
        # moved the canvas between measuring and clicking (a click in a gap opens nothing)
        page.locator("#hitmap").click(position={"x": 20, "y": 40})
        return "on" in (tile_view.get_attribute("class") or "").split()

    wait_for(open_tile, timeout=30, interval=0.5)
    expect(tile_view).to_have_class(re.compile("on"))

    # The run: how long it has run, what storage wrote and lost.
    expect(page.get_by_test_id("elapsed")).to_contain_text(" s", timeout=10_000)
    # "–" until storage's counters name this run
    wait_for(lambda: int(re.sub(r"\D", "", page.get_by_test_id("written").inner_text()) or 0)
             > 1000, timeout=60, interval=0.5)
    expect(page.get_by_test_id("lost")).to_have_text("0")
    page.click("#btn-end_run")
    expect(state).to_have_text("STOP", timeout=20_000)
    run = daq.runs_json()[0]
    row = page.locator("#runs tbody tr").first
    expect(row).to_contain_text(f"{run['packets_written']:,}", timeout=10_000)
    expect(row.locator("td").nth(2)).to_have_text(run["exit_status"])
    expect(page.locator("#monitor-note")).to_contain_text(
        f"run {run['run_number']} ended: the monitor was cleared", timeout=10_000)

    # A routine's form is built from its parameters: types, defaults, units; no markup.
    page.select_option("#action-component", "producer-1")
    page.select_option("#action-name", "run_routine")
    page.select_option("#routine-name", "pedestal")
    seconds = page.locator("#action-params input[name=seconds]")
    expect(seconds).to_have_attribute("type", "number")
    expect(seconds).to_have_value("2")
    expect(page.locator("#action-params")).to_contain_text("float in s, > 0, default 2")
    doc = page.locator("#action-doc")
    expect(doc.locator("code").first).to_be_visible()
    assert "``" not in doc.inner_text() and ":func:" not in doc.inner_text()
    page.select_option("#routine-name", "quickstart")
    expect(page.locator("#action-params select[name=unmask]")).to_have_value('"routed"')
    page.screenshot(path=str(tmp_path / "page-after-run.png"), full_page=True)
    assert not errors, errors
