#!/usr/bin/env python3
"""The phones of scripts/bench-sync.sh (#19 item 7): Python 3's standard
library only, so it runs on any fresh Debian machine.

  bench-sync-phones.py run BASE TOKENS RECORDS STOP [--phones N] [--period S]
  bench-sync-phones.py report RECORDS [--window START END]

`run`: one thread per phone, each with a device token from TOKENS
(`username token` lines, as `casesync seed --device-tokens` writes them).
Phone i first syncs in full (`GET /api/v1/sync`) at i/N of the period, then
pulls from its cursor every period, calling again at once while the answer
says `more`. Each sync opens its own connection and closes it: a phone
that slept 30 s finds the server's keep-alive long gone. One line per
request goes to RECORDS (wall-clock start, seconds, kind, status, cases,
bytes). Once the file STOP exists the phones go on for one more period (so
every phone pulls once after it) and for two periods since the start at
least (every phone has synced in full and pulled from its cursor).

`report`: latency p50/p99/max and counts per kind: the first full syncs,
the cursor pulls, and all syncs that started within the window (the push),
as JSON on one line for the script to read, after a table for people.
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


def run(base, tokens_path, records_path, stop_path, phones, period):
    url = urllib.parse.urlsplit(base)
    tokens = []
    with open(tokens_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                tokens.append(parts[1])
    if len(tokens) < phones:
        sys.exit(f"{tokens_path} holds {len(tokens)} device tokens, {phones} phones need one each")
    tokens = tokens[:phones]
    records = []
    lock = threading.Lock()
    start = time.time()
    end = [None]  # set once the push is over
    decided = threading.Event()

    def sync(conn, token, cursor):
        path = "/api/v1/sync" + (f"?cursor={cursor}" if cursor else "")
        began = time.time()
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        body = answer.read()
        secs = time.perf_counter() - t0
        feed = json.loads(body) if answer.status == 200 else {}
        return began, secs, answer.status, feed, len(body)

    def phone(i, token):
        due = start + period * i / phones
        cursor = None
        while True:
            while True:
                if end[0] is not None and due >= end[0]:
                    return
                pause = due - time.time()
                if pause <= 0:
                    break
                if end[0] is None:
                    decided.wait(pause)  # wakes early once the end is known
                else:
                    time.sleep(pause)
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            try:
                kind = "full" if cursor is None else "cursor"
                while True:
                    try:
                        began, secs, status, feed, size = sync(conn, token, cursor)
                    except (OSError, http.client.HTTPException) as e:
                        with lock:
                            records.append((time.time(), 0.0, kind, f"error:{type(e).__name__}", 0, 0))
                        break
                    with lock:
                        records.append((began, secs, kind, str(status), len(feed.get("cases", [])), size))
                    if status != 200:
                        break
                    cursor = feed["cursor"]
                    if not feed.get("more"):
                        break
                    kind = "more"
            finally:
                conn.close()
            due += period

    threading.stack_size(256 * 1024)
    threads = [threading.Thread(target=phone, args=(i, t), daemon=True) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    while not os.path.exists(stop_path):
        time.sleep(0.2)
    end[0] = max(time.time() + period, start + 2 * period)
    decided.set()
    for t in threads:
        t.join()
    with open(records_path, "w") as f:
        for r in sorted(records):
            f.write("%.6f %.6f %s %s %d %d\n" % r)


def quantile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def report(records_path, window):
    rows = []
    with open(records_path) as f:
        for line in f:
            began, secs, kind, status, cases, size = line.split()
            rows.append((float(began), float(secs), kind, status, int(cases), int(size)))
    classes = {
        "first full sync": lambda r: r[2] == "full",
        "cursor pull": lambda r: r[2] != "full",
        "every sync": lambda r: True,
    }
    if window:
        lo, hi = window
        classes["while the push ran"] = lambda r: lo <= r[0] <= hi
        classes["after the push"] = lambda r: r[0] > hi
    summary = {}
    print(f"{'syncs':<22}{'count':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'with cases':>12}{'failed':>8}")
    for name, keep in classes.items():
        chosen = [r for r in rows if keep(r)]
        ok = sorted(r[1] for r in chosen if r[3] == "200")
        failed = sum(1 for r in chosen if r[3] != "200")
        with_cases = sum(1 for r in chosen if r[3] == "200" and r[4] > 0)
        p50, p99, top = (quantile(ok, 0.5) * 1e3, quantile(ok, 0.99) * 1e3, (ok[-1] if ok else float("nan")) * 1e3)
        summary[name] = {"count": len(chosen), "p50_ms": p50, "p99_ms": p99, "max_ms": top,
                         "with_cases": with_cases, "failed": failed}
        print(f"{name:<22}{len(chosen):>7}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}{with_cases:>12}{failed:>8}")
    statuses = sorted({r[3] for r in rows if r[3] != "200"})
    if statuses:
        print("failures: " + ", ".join(f"{s} ×{sum(1 for r in rows if r[3] == s)}" for s in statuses))
    full = [r for r in rows if r[2] == "full" and r[3] == "200"]
    if full:
        print(f"a full sync carried {sum(r[4] for r in full) / len(full):.0f} cases, "
              f"{sum(r[5] for r in full) / len(full) / 1024:.1f} KB on average")
    print("SUMMARY " + json.dumps(summary))


def main(argv):
    def option(name, default, kind):
        if name in argv:
            i = argv.index(name)
            value = kind(argv[i + 1])
            del argv[i:i + 2]
            return value
        return default

    if len(argv) >= 2 and argv[1] == "run":
        phones = option("--phones", 1000, int)
        period = option("--period", 30.0, float)
        if len(argv) != 6:
            sys.exit(__doc__)
        run(argv[2], argv[3], argv[4], argv[5], phones, period)
    elif len(argv) >= 2 and argv[1] == "report":
        window = None
        if "--window" in argv:
            i = argv.index("--window")
            window = (float(argv[i + 1]), float(argv[i + 2]))
            del argv[i:i + 3]
        if len(argv) != 3:
            sys.exit(__doc__)
        report(argv[2], window)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
