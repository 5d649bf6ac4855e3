#!/usr/bin/env python3
"""Browser check of the admin UI (/ui) of a running annals process.

Drives Debian's headless Chromium through Selenium 4 over the page's views:
overview, streams, one stream, the whole log, the live tail (an append must
show within a second of its answer), a projection rebuild, sagas. Fails on
any SEVERE entry of the browser console.

    python3 tests/ui/browser.py --base http://127.0.0.1:8080 --key KEY \
        --stream customer-... --stream-events 3 --prefix customer- \
        --append /customers --append-body '{"name": "Ada"}' \
        --projection customers --screenshots /tmp/ui

Prints one line per step and "ui ok"; on failure one line
"ui check failed: <step>: <why>" on stderr, a screenshot failure.png, exit 1.
"""
import argparse
import json
import os
import sys
import time
import uuid

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 15  # seconds, the longest any step waits for the page (but a rebuild)


class Failure(Exception):
    pass


def tid(name):
    return f'[data-testid="{name}"]'


class Check:
    def __init__(self, args):
        self.args = args
        self.step = "start"
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # An explicit driver: Selenium Manager never downloads anything.
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_window_size(1280, 800)
        self.driver.set_script_timeout(WAIT)

    # ---- helpers

    def wait(self, what, condition, timeout=WAIT):
        """Waits until condition(driver) is truthy and returns it, or fails naming what."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(condition)
        except TimeoutException:
            raise Failure(f"timed out after {timeout} s waiting for {what}") from None

    def find(self, css, root=None):
        return (root or self.driver).find_elements(By.CSS_SELECTOR, css)

    def displayed(self, css):
        return [e for e in self.find(css) if e.is_displayed()]

    def click_tab(self, view):
        tab = self.wait(f"the {view} tab", lambda d: self.displayed(tid(f"tab-{view}")))[0]
        tab.click()
        self.wait(f"the {view} view", lambda d: d.find_element(By.ID, "view").get_attribute("data-view") == view)

    def console(self, ignore_unauthorized=False):
        """Fails on any SEVERE browser console entry since the last look."""
        severe = [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]
        if ignore_unauthorized:
            severe = [e for e in severe if " 401 " not in e.get("message", "")]
        if severe:
            for e in severe:
                print(f"  console SEVERE: {e.get('message')}")
            raise Failure(f"{len(severe)} SEVERE console entr{'y' if len(severe) == 1 else 'ies'}: {severe[0].get('message')}")

    def screenshot(self, name):
        if self.args.screenshots:
            self.driver.save_screenshot(os.path.join(self.args.screenshots, name))

    def say(self, text):
        print(f"{self.step}: {text}", flush=True)

    # ---- steps

    def open(self):
        self.driver.get(self.args.base.rstrip("/") + "/ui")
        if self.args.key:
            # Store the key in this tab's session storage, then load the page again with it.
            self.driver.execute_script("sessionStorage.setItem('annals.key', arguments[0])", self.args.key)
            self.driver.refresh()
        self.wait("the tabs", lambda d: self.displayed(tid("tab-overview")))
        self.app_name = self.driver.find_element(By.CSS_SELECTOR, tid("app-name")).text

    def overview(self):
        events = self.wait("stats with events > 0", lambda d: next(
            (int(e.get_attribute("data-value")) for e in self.find(f'{tid("stats")} [data-stat="events"]')
             if int(e.get_attribute("data-value") or 0) > 0), None))
        checks = self.wait("health checks", lambda d: self.find(f'{tid("health")} .check'))
        status = self.driver.find_element(By.CSS_SELECTOR, tid("health-status")).text
        listed = ", ".join(f"{c.get_attribute('data-check')} {c.find_element(By.TAG_NAME, 'dd').text}" for c in checks)
        self.say(f"{events} events; health {status} ({listed})")
        self.screenshot("ui-overview.png")

    def streams(self):
        prefix, stream = self.args.prefix, self.args.stream
        self.click_tab("streams")
        category = prefix.split("-", 1)[0]
        self.wait(f"the category chip {category!r}",
                  lambda d: [c for c in self.find(tid("category")) if c.get_attribute("data-category") == category])
        box = self.driver.find_element(By.CSS_SELECTOR, tid("prefix-input"))
        box.clear()
        box.send_keys(prefix)
        self.driver.find_element(By.CSS_SELECTOR, tid("prefix-go")).click()
        matching = self.wait("the matching count", lambda d: self.matching(prefix))
        for page in range(1, 1001):
            rows = self.wait("stream rows", lambda d: self.find(tid("stream-row")))
            ids = [r.get_attribute("data-stream") for r in rows]
            bad = [i for i in ids if not i.startswith(prefix)]
            if bad:
                raise Failure(f"stream {bad[0]!r} listed for prefix {prefix!r}")
            if stream in ids:
                break
            nxt = self.displayed(tid("next-page"))
            if not nxt:
                raise Failure(f"{stream} not among the {matching} streams matching {prefix!r}")
            nxt[0].click()
            self.wait("the next page", lambda d: self.first_stream() not in (None, ids[0]))
        self.say(f"category {category!r} shown; {matching} streams match {prefix!r}; {stream} on page {page}")
        self.screenshot("ui-streams.png")

    def matching(self, prefix):
        if f"prefix={prefix}" not in self.driver.execute_script("return decodeURIComponent(location.hash)"):
            return None
        value = [e.get_attribute("data-value") for e in self.find(tid("matching"))]
        if not value or not value[0]:
            return None
        if int(value[0]) <= 0:
            raise Failure(f"matching is {value[0]}")
        return int(value[0])

    def first_stream(self):
        rows = self.find(tid("stream-row"))
        return rows[0].get_attribute("data-stream") if rows else None

    def stream(self):
        stream, n = self.args.stream, self.args.stream_events
        row = [r for r in self.find(tid("stream-row")) if r.get_attribute("data-stream") == stream][0]
        row.find_element(By.CSS_SELECTOR, tid("stream-link")).click()
        self.wait("the stream view", lambda d: d.find_element(By.CSS_SELECTOR, tid("stream-id")).text == stream)
        expect = min(n, 20)
        rows = self.wait(f"{expect} event rows", lambda d: (lambda rs: rs if len(rs) == expect else None)(self.find(tid("event-row"))))
        time.sleep(0.3)  # nothing more may come
        rows = self.find(tid("event-row"))
        versions = [int(r.get_attribute("data-version")) for r in rows]
        if versions != list(range(1, expect + 1)):
            raise Failure(f"versions {versions}, expected 1..{expect}")
        event_type = rows[0].get_attribute("data-type")
        rows[0].click()
        detail = self.wait("the event detail", lambda d: self.displayed(tid("event-detail")))[0]
        text = detail.text
        if event_type not in text:
            raise Failure(f"the detail does not name the type {event_type!r}: {text[:200]!r}")
        data = detail.find_element(By.CSS_SELECTOR, tid("event-data")).text
        if data.strip() not in ("{}", "[]", "null") and data.startswith(("{", "[")) and "\n  " not in data:
            raise Failure(f"the data is not pretty-printed: {data[:200]!r}")
        self.say(f"{len(rows)} events, versions 1..{expect}; detail of {event_type} ({data.count(chr(10)) + 1} lines of data)")
        self.screenshot("ui-stream.png")

    def read_all(self):
        self.click_tab("all")
        box = self.driver.find_element(By.CSS_SELECTOR, tid("from-input"))
        box.clear()
        box.send_keys("1")
        self.driver.find_element(By.CSS_SELECTOR, tid("from-go")).click()
        # Read inside the wait: rows found just before the page renders the
        # answer go stale, and the wait then looks again.
        def first_row(d):
            rows = self.find(tid("event-row"))
            return rows and (int(rows[0].get_attribute("data-position")), len(rows))
        first, count = self.wait("event rows from position 1", first_row)
        if first < 1:
            raise Failure(f"the first row is at position {first}")
        self.say(f"{count} events from position {first}")
        self.screenshot("ui-all.png")

    def tail(self):
        self.click_tab("tail")
        status = self.wait("the tail to follow", lambda d: (lambda s: s if "following" in s else None)(
            d.find_element(By.CSS_SELECTOR, tid("tail-status")).text))
        before = len(self.find(tid("event-row")))
        # The POST is sent from the page (same origin, its key); the time is taken when its answer
        # is in, and the page is watched for the new row from then on (10 s at most, to report).
        result = self.driver.execute_async_script("""
            const [url, body, key, idem, before, done] = arguments;
            const headers = {'Content-Type': 'application/json', 'Idempotency-Key': idem};
            if (key) headers.Authorization = 'Bearer ' + key;
            const rows = () => document.querySelectorAll('[data-testid="event-row"]').length;
            fetch(url, {method: 'POST', headers, body}).then(async (res) => {
              const text = await res.text();
              const t0 = performance.now();
              if (!res.ok) { done({ok: false, status: res.status, text}); return; }
              const look = () => {
                const ms = performance.now() - t0;
                if (rows() > before || ms > 10000) done({ok: true, status: res.status, ms, rows: rows()});
                else setTimeout(look, 5);
              };
              look();
            }, (e) => done({ok: false, status: 0, text: String(e)}));
        """, self.args.append, self.args.append_body, self.args.key or "", str(uuid.uuid4()), before)
        if not result["ok"]:
            raise Failure(f"POST {self.args.append} answered {result['status']}: {result['text'][:300]}")
        ms = result["ms"]
        if result["rows"] <= before:
            raise Failure(f"no new event row 10 s after the POST's answer ({result['status']})")
        if ms > 1000:
            raise Failure(f"the new event row showed {ms:.0f} ms after the POST's answer (more than 1 s)")
        top = self.find(tid("event-row"))[0]
        self.say(f"{status}; POST {self.args.append} -> {result['status']}; new row "
                 f"{top.get_attribute('data-type')} at {top.get_attribute('data-position')} "
                 f"{ms:.0f} ms after the answer")
        self.screenshot("ui-tail.png")

    def projection_row(self):
        rows = self.find(f'{tid("projection-row")}[data-name="{self.args.projection}"]')
        return rows[0] if rows else None

    def projection_state(self):
        row = self.projection_row()
        return row.find_element(By.CSS_SELECTOR, tid("projection-state")).text if row else None

    def last_rebuild(self):
        cell = self.projection_row().find_element(By.CSS_SELECTOR, tid("last-rebuild"))
        return int(cell.get_attribute("data-number") or 0), cell.text

    def projections(self):
        name = self.args.projection
        self.click_tab("projections")
        self.wait(f"projection {name} live", lambda d: self.projection_state() == "live")
        before, _ = self.last_rebuild()
        button = self.wait("the rebuild button enabled", lambda d: (lambda b: b if b.is_enabled() else None)(
            self.projection_row().find_element(By.CSS_SELECTOR, tid("rebuild"))))
        button.click()
        ok = self.wait("the confirmation dialog", lambda d: self.displayed(tid("confirm-ok")))[0]
        text = self.driver.find_element(By.CSS_SELECTOR, tid("confirm-text")).text
        if name not in text or "ebuild" not in text:
            raise Failure(f"the confirmation does not name the rebuild of {name}: {text!r}")
        ok.click()
        self.wait("the dialog to close", lambda d: not self.displayed(tid("confirm-ok")))
        started = time.monotonic()
        number, text = self.wait(f"a finished rebuild of {name} and state live", lambda d: (
            lambda lr: lr if lr[0] > before and lr[0] >= 1 and self.projection_state() == "live" else None)(
            self.last_rebuild()), timeout=30)
        self.say(f"{name} live; rebuilt in {time.monotonic() - started:.1f} s; last rebuild: {' · '.join(text.splitlines())}")
        self.screenshot("ui-projections.png")

    def sagas(self):
        if not self.displayed(tid("tab-sagas")):
            self.say("no sagas in this process (skipped)")
            return
        self.click_tab("sagas")
        rows = self.wait("saga rows", lambda d: self.find(tid("saga-row")))
        names = [r.get_attribute("data-name") for r in rows]
        self.say(f"{len(rows)} saga{'' if len(rows) == 1 else 's'}: {', '.join(names)}")
        self.screenshot("ui-sagas.png")

    def run(self):
        steps = [("open", self.open), ("overview", self.overview), ("streams", self.streams),
                 ("stream", self.stream), ("all", self.read_all), ("tail", self.tail),
                 ("projections", self.projections), ("sagas", self.sagas)]
        for name, step in steps:
            self.step = name
            step()
            # The key-less first load may have been answered 401 before the key was stored.
            self.console(ignore_unauthorized=name == "open")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--key", help="API key, stored in the tab's session storage")
    ap.add_argument("--stream", required=True, help="a stream that holds --stream-events events")
    ap.add_argument("--stream-events", type=int, required=True)
    ap.add_argument("--prefix", required=True, help="a prefix of --stream, e.g. customer-")
    ap.add_argument("--append", required=True, help="path of a POST that appends one event")
    ap.add_argument("--append-body", required=True, help="its JSON body")
    ap.add_argument("--projection", required=True, help="a projection to rebuild")
    ap.add_argument("--screenshots", help="directory for PNG screenshots")
    args = ap.parse_args()
    json.loads(args.append_body)  # fail early on a malformed body
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)

    check = None
    try:
        check = Check(args)
        check.run()
    except (Failure, WebDriverException, AssertionError, ValueError, KeyError, IndexError, TypeError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        step = check.step if check else "start"
        print(f"ui check failed: {step}: {why}", file=sys.stderr)
        if check:
            try:
                check.driver.save_screenshot(os.path.join(args.screenshots or "/tmp", "failure.png"))
            except WebDriverException:
                pass
        return 1
    finally:
        if check:
            check.driver.quit()
    print("ui ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
