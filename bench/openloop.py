"""An open-loop, constant-rate HTTP load generator: latency at a fixed offered rate.

wrk (Debian's) is closed-loop: each connection waits for its answer before it sends again, so
a slow response delays the next request and hides the queueing an EHR would see (coordinated
omission). wrk2's constant-rate mode is not packaged. This client starts request ``i`` at
``t0 + i / rate`` whatever happened before, and measures each latency from that *scheduled*
start, so time spent queueing in the client or the server counts. At a few hundred requests per
second asyncio has ample headroom on one core.

With ``--fresh`` every request carries orders the service has not seen before: each placer order
number (``"ORD-123456"``) gets a suffix unique to the request, as bench/post.lua does for wrk.

Each request is a fresh connection with ``Connection: close``, which is what gunicorn's sync
workers do anyway. Runs as its own process and prints one JSON object:

    python -m bench.openloop --url http://127.0.0.1:8080/cds-services/x --body FILE --rate 200 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT_S = 10.0
# Past this many unanswered requests the server is overloaded at the offered rate; further sends
# are counted as failures rather than piling up sockets without bound.
MAX_IN_FLIGHT = 256


@dataclass(slots=True)
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0

    def fail(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (``fraction`` in 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


_PLACER_NUMBER = re.compile(rb'("ORD-\d+)"')


def freshen(body: bytes, tag: str) -> bytes:
    """``body`` with every placer order number made unique by ``tag``."""
    return _PLACER_NUMBER.sub(rb"\1-" + tag.encode() + b'"', body)


def build_request(url: str, body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    port = parts.port or 80
    head = (
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return parts.hostname, port, head.encode() + body


async def _one(host: str, port: int, request: bytes, scheduled: float, outcome: Outcome) -> None:
    outcome.in_flight += 1
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            response = await reader.read()  # to EOF: the server closes after answering
        done = time.perf_counter()
    except TimeoutError:
        outcome.fail("timeout")
        return
    except OSError as exc:
        outcome.fail(type(exc).__name__)
        return
    finally:
        outcome.in_flight -= 1
        if writer is not None:
            writer.close()
    if not response.startswith(b"HTTP/1.1 200"):
        outcome.fail(f"status {response[9:12].decode(errors='replace') or 'none'}")
        return
    outcome.latencies_ms.append((done - scheduled) * 1000)


async def run(url: str, body: bytes, rate: float, duration: float, *, fresh: bool = False) -> dict[str, object]:
    host, port, request = build_request(url, body)
    seed = secrets.randbelow(10**12)
    outcome = Outcome()
    total = max(1, round(rate * duration))
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if outcome.in_flight >= MAX_IN_FLIGHT:
            outcome.fail("not sent: overloaded")
            continue
        if fresh:
            request = build_request(url, freshen(body, f"{seed}-{index}"))[2]
        tasks.append(asyncio.create_task(_one(host, port, request, scheduled, outcome)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies = sorted(outcome.latencies_ms)
    return {
        "offered_rps": rate,
        "sent": total,
        "ok": len(latencies),
        "errors": outcome.errors,
        "elapsed_s": round(elapsed, 3),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p95_ms": round(percentile(latencies, 0.95), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else math.nan,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--fresh", action="store_true", help="make every request's orders new to the service")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    print(json.dumps(asyncio.run(run(args.url, args.body.read_bytes(), args.rate, args.duration, fresh=args.fresh))))


if __name__ == "__main__":
    main()
