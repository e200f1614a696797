"""P5: POST /orchestrator/runs at a constant arrival rate, and the most a few clients get.

The goal reads "≥ 200/s sustained, p99 ≤ 50 ms": requests arrive at 200/s whether or not
earlier ones were answered (as operators and CI jobs do), and each one's latency counts
from the moment it was due, so a stall of the API shows in every request it delayed
(no coordinated omission). A closed loop of a few clients that wait for each answer
measures something else (the most the API takes at that concurrency); it is printed beside.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from bench.speed_report import Line, median, ms, pct

RATE = 200.0
SECONDS = 10.0
CLIENTS = 16  # connections that carry the arrivals; a slow answer does not hold the next
GOAL_P99_S = 0.050


@dataclass(frozen=True)
class Load:
    offered: float  # per second
    achieved: float  # answered per second, first due to last answered
    latencies: list[float]
    refused: int  # answers other than 202
    worst_by_second: list[float]  # the slowest answer of the requests due in each second
    reconnects: int = 0  # connections the API closed after an answer (Connection: close)


def constant_rate(base: str, rate: float = RATE, seconds: float = SECONDS) -> Load:
    """``rate`` POSTs a second for ``seconds``; each latency counts from its due time."""
    return asyncio.run(_constant_rate(urlsplit(base), rate, seconds))


async def _constant_rate(url: SplitResult, rate: float, seconds: float) -> Load:
    # The generator shares the two cores with the API, so it is kept cheap: one event loop,
    # requests encoded once, keep-alive connections (httpx in threads cost a core's tenth
    # at this rate, and its GIL waits showed up as API latency).
    body = json.dumps({"instruction": "load", "target_service": "app"}).encode()
    request = (
        f"POST /orchestrator/runs HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(CLIENTS):
        idle.put_nowait(await asyncio.open_connection(url.hostname, url.port))
    total = int(rate * seconds)
    latencies: list[float] = []
    worst = [0.0] * (int(seconds) + 1)
    refused = 0
    reconnects = [0]
    start = time.perf_counter() + 0.1

    async def one(index: int, due: float) -> None:
        nonlocal refused
        reader, writer = await idle.get()
        writer.write(request)
        status, close = await _answer(reader)
        if close:  # the API closed the connection after this answer: reconnect, as clients do
            writer.close()
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            reconnects[0] += 1
        idle.put_nowait((reader, writer))
        took = time.perf_counter() - due
        latencies.append(took)
        second = int(index / rate)
        worst[second] = max(worst[second], took)
        refused += status != 202

    tasks = []
    for index in range(total):
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait()[1].close()
    return Load(rate, len(latencies) / elapsed, latencies, refused, worst, reconnects[0])


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response with a Content-Length body: its status code, and whether
    the server closes the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length, close = 0, False
    for header in lines[1:]:
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "connection":
            close = value.strip().lower() == "close"
    await reader.readexactly(length)
    return int(lines[0].split()[1]), close


def line(load: Load, closed_rate: float, closed_p99: float) -> Line:
    p99 = pct(load.latencies, 99)
    holds = load.refused == 0 and load.achieved >= 0.99 * load.offered and p99 <= GOAL_P99_S
    figure = f"{load.achieved:.0f}/s of {load.offered:.0f}/s offered, p99 {ms(p99)}"
    figure += f" (8 waiting clients: {closed_rate:.0f}/s, p99 {ms(closed_p99)})"
    return Line(
        "P5 POST /orchestrator/runs sustained, PostgreSQL + RabbitMQ",
        figure,
        ">= 200/s, p99 <= 50 ms",
        holds,
        {
            "offered": load.offered,
            "achieved": load.achieved,
            "p50_s": median(load.latencies),
            "p99_s": p99,
            "refused": load.refused,
            "worst_by_second_s": [round(w, 4) for w in load.worst_by_second],
            "closed_loop_rate": closed_rate,
            "closed_loop_p99_s": closed_p99,
            "reconnects": load.reconnects,
        },
    )
