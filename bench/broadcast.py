"""The whole broadcast with receipts flowing: from POST /v1/alerts to the last receipt committed,
and which part bounds it.

A fresh database with --recipients subscribers inside the zone; the GatewayAPI simulator
(receipts not held: each is posted, JWT-signed, to the API's /v1/callbacks/primary after
--receipt-delay-ms, as GatewayAPI does); one `broadcaster api` and one `broadcaster dispatcher`
as separate processes, with a gateway rate limit far above what the machine does. One normal
alert over the whole zone is POSTed to /v1/alerts with an API key. Measured from that POST:

- fan-out done: the alert's status leaves 'queued' (the fan-out committed; polled every 20 ms);
- first and last submit: the simulator's /_sim/timeline (wall clock when it accepted a request);
- alert completed: alerts.completed_at (nothing left to submit);
- last receipt committed: the latest delivery_receipts.received_at (the receiving transaction's
  start, a few ms before its commit), once every receipt was answered by the API (it answers
  after the commit) and every delivery is final in the database.

Submitted/s comes from the simulator's timeline, receipts committed/s from
delivery_receipts.received_at, both in 1-s bins. (deliveries.final_at is no use for this: it
holds the gateway's own event time, which the simulator stamps at submit, in whole seconds.)
CPU seconds per part (API, dispatcher, simulator, the PostgreSQL backends serving the API's and
the dispatcher's connections, PostgreSQL's background processes, and every other process on the
machine) are sampled every second, so what bounds each phase can be named. The chart (--chart,
a PNG) shows both rates and the CPU per part over time.

    python bench/broadcast.py [--recipients 500000] [--receipt-delay-ms 200]
                              [--chart docs/broadcast-throughput.png | --no-chart] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ROOT,
    ZONE,
    children,
    cpu_seconds,
    fresh_database,
    get_json,
    postgres_version,
    report,
    run,
    seed_box,
    start_service,
)

from broadcaster import procs
from broadcaster.auth import create_api_key
from broadcaster.database import connect

RATE = 10_000_000  # far above anything the machine does: the limiter never waits
MESSAGE = "Politiet: indbrud i området. Se noget? Ring 114."
QUICK_RECIPIENTS = 10_000
DEFAULT_CHART = ROOT / "docs" / "broadcast-throughput.png"
PROCESSES = ("api", "dispatcher", "simulator")


# ------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """The started stack: URLs and the PIDs of the three service processes."""

    db: str
    api: str
    sim: str
    pids: dict[str, int]
    key: str


def start_stack(
    started: list[procs.Child],
    log_dir: Path,
    url: str,
    key: str,
    *,
    rate: float,
    receipt_delay_ms: float,
    hold_receipts: bool = False,
) -> Stack:
    """Simulator, `broadcaster api` and `broadcaster dispatcher` on free ports; the dispatcher
    gives the simulator the API's callback URL, so receipts go to the API as in production."""
    sim_args = ["--receipt-delay-ms", f"{receipt_delay_ms:g}"]
    sim_args += ["--hold-receipts"] * hold_receipts
    service = start_service(
        started,
        log_dir,
        url,
        rate=rate,
        sim_args=sim_args,
        env={"BROADCASTER_POLL_INTERVAL": "0.2"},
    )
    pids = {c.name: c.pid for c in started if c.name in PROCESSES}
    return Stack(url, service.api, service.sim, pids, key)


async def prepare(name: str, subscribers: int) -> tuple[str, str]:
    """A fresh database with `subscribers` inside ZONE and an API key; (url, key)."""
    url = await fresh_database(name)
    await seed_box(url, subscribers)
    conn = await connect(url)
    try:
        key = await create_api_key(conn, "bench")
    finally:
        await conn.close()
    return url, key


# ------------------------------------------------------------------------------ sampling


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class PostgresCpu:
    """CPU seconds of PostgreSQL processes since `start()`, in three parts: backends of the
    dispatcher's pool (application_name 'dispatcher ...'), the other client backends of this
    database (the API's pool; the benchmark's own connection is left out), and the rest
    (autovacuum, WAL writer, checkpointer, ...; those are shared with other databases on the
    server). A process that exits keeps its last reading, so the sums never go down."""

    PARTS = ("postgres_api", "postgres_dispatcher", "postgres_background")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.baseline: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}

    async def _read(self) -> dict[int, tuple[str, float]]:
        rows = await self.conn.fetch(
            """
            SELECT pid,
                   CASE WHEN backend_type <> 'client backend' THEN 'postgres_background'
                        WHEN application_name LIKE 'dispatcher%' THEN 'postgres_dispatcher'
                        ELSE 'postgres_api' END AS part
            FROM pg_stat_activity
            WHERE (datname = current_database() OR datname IS NULL) AND pid <> pg_backend_pid()
            """
        )
        out = {}
        for r in rows:
            seconds = cpu_seconds(r["pid"])
            if seconds is not None:
                out[r["pid"]] = (str(r["part"]), seconds)
        return out

    async def start(self) -> None:
        self.last = await self._read()
        self.baseline = {pid: s for pid, (_, s) in self.last.items()}

    async def sample(self) -> tuple[dict[str, float], dict[int, tuple[str, float]]]:
        """CPU seconds since start() per part, and per backend (pid: (part, seconds))."""
        self.last.update(await self._read())
        out = dict.fromkeys(self.PARTS, 0.0)
        backends = {}
        for pid, (part, seconds) in self.last.items():
            used = seconds - self.baseline.get(pid, 0.0)
            out[part] += used
            backends[pid] = (part, used)
        return out, backends


@dataclass
class Sample:
    t: float
    cpu: dict[str, float]  # cumulative CPU seconds since the start, per part
    backends: dict[int, tuple[str, float]]  # the same per PostgreSQL process: (part, seconds)
    machine: tuple[int, int]
    sim: dict[str, int]


@dataclass
class Run:
    """What happened during one broadcast, as seen from outside the service."""

    posted: float = 0.0
    answered: float = 0.0
    alert_id: int = 0
    fanout_done: float | None = None
    completed_seen: float | None = None
    receipts_answered: float | None = None
    samples: list[Sample] = field(default_factory=list)


async def sample_once(stack: Stack, pg: PostgresCpu, base: dict[str, float]) -> Sample:
    cpu = {}
    for name, pid in stack.pids.items():
        seconds = cpu_seconds(pid)
        cpu[name] = (seconds if seconds is not None else base[name]) - base[name]
    parts, backends = await pg.sample()
    cpu.update(parts)
    stats = get_json(f"{stack.sim}/_sim/stats")
    return Sample(time.time(), cpu, backends, machine_jiffies(), stats)


async def broadcast(
    stack: Stack,
    recipients: int,
    timeout: float,
    *,
    wait_for_receipts: bool = True,
    interval: float = 1.0,
) -> Run:
    """POST one normal alert over ZONE and follow it until the last receipt is committed (or,
    without wait_for_receipts, until the alert completed); samples every `interval` seconds."""
    run_ = Run()
    conn = await connect(stack.db)
    try:
        pg = PostgresCpu(conn)
        await pg.start()
        base = {name: cpu_seconds(pid) or 0.0 for name, pid in stack.pids.items()}
        run_.samples.append(await sample_once(stack, pg, base))
        headers = {"Authorization": f"Bearer {stack.key}"}
        body = {"message": MESSAGE, "area": ZONE, "priority": "normal", "reference": "bench"}
        async with aiohttp.ClientSession(headers=headers) as http:
            run_.posted = time.time()
            async with http.post(f"{stack.api}/v1/alerts", json=body) as r:
                answer = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"POST /v1/alerts answered {r.status}: {answer}")
            run_.answered = time.time()
        run_.alert_id = int(answer["id"])
        deadline = run_.posted + timeout
        next_sample = run_.posted + interval
        while time.time() < deadline:
            now = time.time()
            if run_.fanout_done is None or run_.completed_seen is None:
                status = await conn.fetchval(
                    "SELECT status FROM alerts WHERE id = $1", run_.alert_id
                )
                if status != "queued" and run_.fanout_done is None:
                    run_.fanout_done = now
                if status not in ("queued", "dispatching") and run_.completed_seen is None:
                    run_.completed_seen = now
                    if not wait_for_receipts:
                        break
            if now >= next_sample:
                sample = await sample_once(stack, pg, base)
                run_.samples.append(sample)
                next_sample = sample.t + interval
                stats = sample.sim
                answered = stats["receipts_sent"] + stats["receipts_failed"]
                if (
                    run_.completed_seen is not None
                    and run_.receipts_answered is None
                    and answered >= stats["recipients"] >= recipients
                    and stats["receipts_pending"] == 0
                ):
                    run_.receipts_answered = sample.t
                if run_.receipts_answered is not None:
                    final = await _final_count(conn, run_.alert_id)
                    if final >= recipients or stats["receipts_failed"]:
                        break
            await asyncio.sleep(0.02 if run_.fanout_done is None else 0.1)
        run_.samples.append(await sample_once(stack, pg, base))
    finally:
        await conn.close()
    return run_


async def _final_count(conn: Any, alert_id: int) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE alert_id = $1 "
            "AND status IN ('delivered', 'failed', 'expired', 'cancelled')",
            alert_id,
        )
    )


# ------------------------------------------------------------------------------ figures


def submit_bins(timeline: list[list[Any]], alert_id: int, t0: float) -> list[int]:
    """SMS accepted by the simulator per 1-s bin since t0 (this alert's requests only)."""
    bins: list[int] = []
    for t, n, userref in timeline:
        if userref != str(alert_id):
            continue
        i = int(float(t) - t0)
        bins.extend([0] * (i + 1 - len(bins)))
        bins[i] += int(n)
    return bins


async def receipt_bins(url: str, t0: float) -> tuple[list[int], float | None, int]:
    """Receipts committed per 1-s bin since t0 (by delivery_receipts.received_at); the epoch of
    the last one and how many there are."""
    conn = await connect(url)
    try:
        rows = await conn.fetch(
            "SELECT floor(extract(epoch FROM received_at) - $1)::int AS s, count(*) AS n "
            "FROM delivery_receipts GROUP BY 1 ORDER BY 1",
            t0,
        )
        last = await conn.fetchval(
            "SELECT extract(epoch FROM max(received_at)) FROM delivery_receipts"
        )
    finally:
        await conn.close()
    bins: list[int] = []
    for r in rows:
        i = max(0, int(r["s"]))
        bins.extend([0] * (i + 1 - len(bins)))
        bins[i] += int(r["n"])
    return bins, float(last) if last is not None else None, sum(bins)


def cpu_series(samples: list[Sample], t0: float) -> dict[str, list[float]]:
    """Cores busy per part between consecutive samples (at least 0.5 s apart), the rest of the
    machine ('others') and the whole machine, with the sample times since t0."""
    out: dict[str, list[float]] = {"t": []}
    ncpu = os.cpu_count() or 1
    a = samples[0]
    for b in samples[1:]:
        dt = b.t - a.t
        if dt < 0.5:
            continue
        out["t"].append(round(b.t - t0, 2))
        ours = 0.0
        for name in b.cpu:
            used = b.cpu[name] - a.cpu[name]
            ours += used
            out.setdefault(name, []).append(round(used / dt, 2))
        busiest = max(
            (sec - a.backends.get(pid, ("", 0.0))[1] for pid, (_, sec) in b.backends.items()),
            default=0.0,
        )
        out.setdefault("postgres_busiest_backend", []).append(round(busiest / dt, 2))
        busy, total = b.machine[0] - a.machine[0], b.machine[1] - a.machine[1]
        machine = ncpu * busy / total if total else 0.0
        out.setdefault("others", []).append(round(max(0.0, machine - ours / dt), 2))
        out.setdefault("machine", []).append(round(machine, 2))
        a = b
    return out


SINGLE_LOOP = ("api", "dispatcher", "simulator")  # one asyncio event loop each: at most 1 core


def phase_cpu(samples: list[Sample], start: float, end: float, items: int) -> dict[str, Any]:
    """CPU between the samples nearest to start and end (wall clock): cores busy per part, the
    rest of the machine ('others': not this benchmark's processes), and CPU ms per item."""
    a = min(samples, key=lambda s: abs(s.t - start))
    b = min(samples, key=lambda s: abs(s.t - end))
    dt = b.t - a.t
    if dt <= 0:
        return {}
    used = {name: b.cpu[name] - a.cpu[name] for name in b.cpu}
    cores = {name: round(u / dt, 2) for name, u in used.items()}
    busy, total = b.machine[0] - a.machine[0], b.machine[1] - a.machine[1]
    machine = (os.cpu_count() or 1) * busy / total if total else 0.0
    cores["others"] = round(max(0.0, machine - sum(used.values()) / dt), 2)
    cores["machine"] = round(machine, 2)
    out: dict[str, Any] = {"seconds": round(dt, 1), "items": items, "cores_busy": cores}
    # One PostgreSQL backend runs on one core at most, like an event loop.
    per_backend = [
        (seconds - a.backends.get(pid, (part, 0.0))[1], part)
        for pid, (part, seconds) in b.backends.items()
    ]
    if per_backend:
        used_most, part = max(per_backend)
        out["busiest_postgres_backend"] = {"part": part, "cores": round(used_most / dt, 2)}
    if items:
        per = {name: round(1000 * u / items, 3) for name, u in used.items()}
        per["total"] = round(1000 * sum(used.values()) / items, 3)
        out["cpu_ms_per_item"] = per
    return out


def bound(phase: dict[str, Any]) -> str:
    """What held a phase back, judged from its CPU: a saturated event loop, else a saturated
    machine, else nothing CPU-bound (waiting: round trips, concurrency limits, timers)."""
    cores = phase.get("cores_busy")
    if not cores:
        return "n/a (too short to sample)"
    ncpu = os.cpu_count() or 1
    ours = {k: v for k, v in cores.items() if k not in ("others", "machine")}
    top = sorted(ours, key=lambda k: -ours[k])
    loops = [k for k in SINGLE_LOOP if cores.get(k, 0) >= 0.85]
    backend = phase.get("busiest_postgres_backend", {})
    if backend.get("cores", 0) >= 0.85:
        loops.append(f"one PostgreSQL backend ({backend['part']}, {backend['cores']:.2f} cores)")
    parts = ", ".join(f"{k} {ours[k]:.2f}" for k in top if ours[k] >= 0.05)
    if loops:
        return f"{' and '.join(loops)} saturated: one core each at most (cores: {parts})"
    if cores["machine"] >= 0.9 * ncpu:
        return (
            f"machine CPU: {cores['machine']:.2f} of {ncpu} cores busy ({parts}, "
            f"others {cores['others']:.2f})"
        )
    return f"no part CPU-bound (cores: {parts}; machine {cores['machine']:.2f} of {ncpu})"


def sustained(bins: list[int]) -> float | None:
    """Mean per-second rate between 10 % and 90 % of the total (the ramps left out)."""
    total = sum(bins)
    if total == 0:
        return None
    acc, lo, hi = 0, None, None
    for i, n in enumerate(bins):
        acc += n
        if lo is None and acc >= 0.1 * total:
            lo = i
        if hi is None and acc >= 0.9 * total:
            hi = i
    assert lo is not None and hi is not None
    return round(0.8 * total / max(1, hi - lo + 1), 1)


def chart(
    path: Path,
    submitted: list[int],
    receipts: list[int],
    cpu: dict[str, list[float]],
    marks: dict[str, float | None],
    title: str,
) -> None:
    """Throughput (1-s bins, log scale) and CPU per part over time since the POST, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    width = max(len(submitted), len(receipts))

    def padded(bins: list[int]) -> list[float]:
        # Empty seconds are left out rather than drawn at 0, which a log axis cannot show.
        return [float(n) if n else float("nan") for n in bins + [0] * (width - len(bins))]

    seconds = list(range(width))
    top.step(seconds, padded(submitted), where="post", label="SMS submitted/s (gateway accepted)")
    top.step(seconds, padded(receipts), where="post", label="receipts committed/s")
    top.set_yscale("log")
    colors = {"fan-out done": "grey", "last submit": "tab:blue", "last receipt": "tab:orange"}
    for label, x in marks.items():
        if x is None:
            continue
        for ax in (top, bottom):
            ax.axvline(x, color=colors.get(label, "black"), linestyle="--", linewidth=1)
        top.annotate(
            f" {label} {x:.1f} s",
            (x, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=8,
            color=colors.get(label, "black"),
        )
    top.set_ylabel("per second (1-s bins, log scale)")
    top.set_title(title, fontsize=9)
    top.legend(loc="upper right", fontsize=9)
    top.grid(alpha=0.3, which="both")
    names = {
        "api": "broadcaster api",
        "dispatcher": "broadcaster dispatcher",
        "simulator": "gateway simulator",
        "postgres_api": "PostgreSQL: API's connections",
        "postgres_dispatcher": "PostgreSQL: dispatcher's connections",
        "postgres_background": "PostgreSQL: background",
        "postgres_busiest_backend": "PostgreSQL: busiest single backend",
        "others": "other processes on the machine",
        "machine": "whole machine",
    }
    for key, label in names.items():
        if key in cpu:
            style: dict[str, Any] = {"linewidth": 1.2}
            if key == "machine":
                style = {"color": "black", "linestyle": ":", "linewidth": 1.2}
            elif key == "others":
                style = {"color": "grey", "linestyle": "-.", "linewidth": 1.0}
            elif key == "postgres_busiest_backend":
                style = {"color": "tab:red", "linestyle": ":", "linewidth": 1.0}
            bottom.plot(cpu["t"], cpu[key], label=label, **style)
    ncpu = os.cpu_count() or 1
    bottom.set_ylim(0, ncpu * 1.05)
    bottom.set_ylabel(f"CPU cores busy (of {ncpu})")
    bottom.set_xlabel("seconds since POST /v1/alerts")
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, ncol=4)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ main


async def main(args: argparse.Namespace) -> None:
    recipients = args.recipients or (QUICK_RECIPIENTS if args.quick else 500_000)
    url, key = await prepare("broadcaster_bench_broadcast", recipients)
    with children() as (started, log_dir):
        stack = start_stack(
            started, log_dir, url, key, rate=RATE, receipt_delay_ms=args.receipt_delay_ms
        )
        r = await broadcast(stack, recipients, args.timeout)
        timeline = get_json(f"{stack.sim}/_sim/timeline")
        sim_stats = r.samples[-1].sim
    t0 = r.posted
    submitted = submit_bins(timeline, r.alert_id, t0)
    receipts, last_receipt, receipts_stored = await receipt_bins(url, t0)
    conn = await connect(url)
    try:
        alert = await conn.fetchrow(
            "SELECT status, recipients, extract(epoch FROM fanned_out_at) AS fanout_started, "
            "extract(epoch FROM completed_at) AS completed FROM alerts WHERE id = $1",
            r.alert_id,
        )
        states = dict(
            await conn.fetch(
                "SELECT status, count(*) FROM deliveries WHERE alert_id = $1 GROUP BY 1",
                r.alert_id,
            )
        )
    finally:
        await conn.close()
    times = [float(t) for t, _, u in timeline if u == str(r.alert_id)]
    first_submit, last_submit = (min(times), max(times)) if times else (None, None)
    final = sum(states.get(s, 0) for s in ("delivered", "failed", "expired", "cancelled"))
    done = alert["status"] == "completed" and final == recipients

    def since(t: float | None) -> float | None:
        return round(t - t0, 3) if t is not None else None

    completed = float(alert["completed"]) if alert["completed"] else None
    end = last_receipt if done and last_receipt else r.samples[-1].t
    submit_end = last_submit or end
    cut = int(submit_end - t0) + 1  # receipt bins up to and including the last submit's second
    tail_receipts = sum(receipts[cut:])
    submitting = phase_cpu(r.samples, first_submit or t0, submit_end, recipients)
    tail = phase_cpu(r.samples, submit_end, end, tail_receipts)
    whole = phase_cpu(r.samples, t0, end, recipients)
    submit_seconds = (last_submit - first_submit) if first_submit and last_submit else None
    tail_seconds = (end - submit_end) if done else None
    series_cpu = cpu_series(r.samples, t0)
    ncpu = os.cpu_count() or 1
    tail_ms = tail.get("cpu_ms_per_item", {}).get("total")
    figures: dict[str, Any] = {
        "recipients": recipients,
        "receipt_delay_ms": args.receipt_delay_ms,
        "completed": done,
        "alert_status": alert["status"],
        "deliveries": states,
        "receipts_stored": receipts_stored,
        "simulator": sim_stats,
        "seconds_post_answered": since(r.answered),
        "seconds_post_to_fanout_started": since(
            float(alert["fanout_started"]) if alert["fanout_started"] else None
        ),
        "seconds_post_to_fanout_done": since(r.fanout_done),
        "seconds_post_to_first_submit": since(first_submit),
        "seconds_post_to_last_submit": since(last_submit),
        "seconds_post_to_alert_completed": since(completed),
        "seconds_post_to_last_receipt_committed": since(last_receipt) if done else None,
        "submit_sms_per_s": round(recipients / submit_seconds, 1) if submit_seconds else None,
        "submit_sms_per_s_sustained_p10_p90": sustained(submitted),
        "submit_sms_per_s_peak_1s": max(submitted, default=0),
        "receipts_committed_by_last_submit": sum(receipts[:cut]),
        "receipts_per_s_whole_run": round(receipts_stored / (end - t0), 1) if done else None,
        "receipts_per_s_after_last_submit": round(tail_receipts / tail_seconds, 1)
        if tail_seconds
        else None,
        "receipts_per_s_sustained_p10_p90": sustained(receipts),
        "receipts_per_s_peak_1s": max(receipts, default=0),
        # What the receipt tail's CPU per receipt would allow with every core for it alone.
        "receipts_per_s_cpu_estimate_all_cores": round(1000 * ncpu / tail_ms, 1)
        if tail_ms
        else None,
        "cpu_seconds": {k: round(v, 1) for k, v in r.samples[-1].cpu.items()},
        "phases": {
            "submitting (first to last submit; items = SMS)": submitting,
            "receipt tail (last submit to last receipt; items = receipts)": tail,
            "whole (POST to last receipt; items = SMS)": whole,
        },
        "bounded_by": {
            "share_of_time_in_receipt_tail": round(tail_seconds / (end - t0), 3)
            if tail_seconds
            else None,
            "submitting": bound(submitting),
            "receipt_tail": bound(tail),
        },
        "series_1s": {"submitted": submitted, "receipts_committed": receipts},
        "postgres": await postgres_version(url),
    }
    chart_path = None
    if not args.no_chart:
        chart_path = Path(args.chart) if args.chart else DEFAULT_CHART
        if args.quick and not args.chart:
            chart_path = Path(tempfile.gettempdir()) / "broadcast-throughput-quick.png"
        chart(
            chart_path,
            submitted,
            receipts,
            series_cpu,
            {
                "fan-out done": since(r.fanout_done),
                "last submit": since(last_submit),
                "last receipt": since(last_receipt) if done else None,
            },
            f"{recipients:,} recipients, GatewayAPI simulator, receipts posted to one "
            f"`broadcaster api` after {args.receipt_delay_ms:g} ms, one `broadcaster dispatcher`, "
            f"no rate limit; {os.cpu_count()} cores",
        )
        figures["chart"] = str(chart_path)
    state = "" if done else f" — NOT COMPLETE ({alert['status']}, {final:,} final)"
    share = figures["bounded_by"]["share_of_time_in_receipt_tail"]
    report(
        "broadcast",
        figures,
        f"{recipients:,} recipients, POST → fan-out done "
        f"{figures['seconds_post_to_fanout_done'] or float('nan'):.1f} s, → last submit "
        f"{figures['seconds_post_to_last_submit'] or float('nan'):.1f} s "
        f"({figures['submit_sms_per_s'] or 0:,.0f} SMS/s), → last receipt committed "
        f"{figures['seconds_post_to_last_receipt_committed'] or float('nan'):.1f} s "
        f"({figures['receipts_per_s_after_last_submit'] or 0:,.0f} receipts/s after the last "
        f"submit, {tail_ms or float('nan'):.2f} ms CPU each); "
        f"{100 * (share or 0):.0f} % of the time is the receipt tail, bounded by: "
        f"{figures['bounded_by']['receipt_tail']}; submitting bounded by: "
        f"{figures['bounded_by']['submitting']}{state}",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=0, help="default 500,000")
    parser.add_argument("--receipt-delay-ms", type=float, default=200.0)
    parser.add_argument("--chart", default="", help=f"PNG to write (default {DEFAULT_CHART})")
    parser.add_argument("--no-chart", action="store_true", help="write no chart")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds from the POST")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    # run_all.py stops a script that overruns with SIGTERM: unwind, so the children stop too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run(main(parser.parse_args()))
