"""Past one D1 database: how many runs a second K databases carry, by simulation.

    uv run python -m bench.shards [--runs 40000] [--shards 1 4 16] [--trace-runs 10]
                                  [--out bench/results]

The statement stream is recorded from the real runtime (`bench/shard_trace.py`: every D1
call of each run, on the embedded bindings behind the cost harness's counting proxies),
then replayed in a discrete-event simulation (SimPy) of K databases:

- **A database** is one server with a FIFO queue (D1 runs one query at a time per database).
  A call costs `statement_ms` (1 ms: about 1,000 simple queries a second, D1's own guidance)
  per statement it holds: a `batch()` of n statements costs n, as D1 runs them one after the
  other. A folded statement that writes n rows costs `statement_ms + row_ms * (n - 1)`.
- **A run** replays one recorded chain (its calls in order, each waiting for the one before)
  on the shard its id names: `new_run_id` puts the shard in the id (a dedupe key's run on the
  shard of the key's hash, a schedule's occurrences on the schedule's shard, any other run on
  a uniformly drawn one), and every call is routed by `shard_of(run_id)`.
- **Fan-out** work goes to every shard: a cron tick every `tick_s` (reconciliation, retention,
  the schedules' restore, as recorded) and `reads_per_s` reads spanning all runs (a page of
  `list` and `counts`, say a dashboard); a read is done when its slowest shard answers.
- **The queue consumer**: a run's message waits until an invocation takes it; an invocation
  takes up to `consumer_batch` waiting messages (after `batch_wait_ms`, 0 as wrangler.toml's
  `max_batch_timeout`), at most `consumer_concurrency` invocations at a time, and consumes its
  messages concurrently (`Runtime.consume_batch`).
- **Today** each run makes its recorded calls (4 for a one-shot run). **The issue-16 target**
  drops the `queued` write (the guarded start already accepts `scheduled`) and folds the
  starts of one invocation's batch into one statement per shard: a one-shot run then costs 2
  statements plus its share of its batch's starts, about K/100 at full batches on K shards.

Figures: the **ceiling** (a closed loop of runs in flight, 200 per shard, each finished run
replaced by a new one: runs finished per second over the middle half of the time, when every
database has a backlog) and the **latency** (open-loop Poisson arrivals at 50% and 80% of the
ceiling: a run's time in D1 from its arrival to its last call's end, queueing included; no
handler time, no Durable Object or queue hops). Simulated time, not wall time: the figures do
not depend on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import simpy

from bench.shard_trace import SCENARIOS, Call, Chain, Trace, record_sync

REPO = Path(__file__).resolve().parent.parent
QUEUED = "UPDATE kumofire_job_runs ->queued"
START = "UPDATE kumofire_job_runs ->running"

# --- the id format of the design (docs/scaling.md) ------------------------------------------

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MAX_SHARDS = 32 * 32  # two base32 characters


def shard_tag(shard: int) -> str:
    if not 0 <= shard < MAX_SHARDS:
        raise ValueError(f"shard {shard} out of range")
    return _ALPHABET[shard // 32] + _ALPHABET[shard % 32]


def new_run_id(ulid: str, shard: int) -> str:
    """`run_<ULID>-<shard>`: the ULID first, so text order stays creation order across shards
    (keyset cursors, `run_ids_before`, retention's key range are unchanged)."""
    return f"run_{ulid}-{shard_tag(shard)}"


def shard_of(run_id: str) -> int:
    """The shard a run id names; an id made before sharding (no tag) is on shard 0."""
    head, sep, tag = run_id.rpartition("-")
    if not sep or len(tag) != 2 or not head.startswith(("run_", "sch_")):
        return 0
    return _ALPHABET.index(tag[0]) * 32 + _ALPHABET.index(tag[1])


def key_shard(key: str, shards: int) -> int:
    """The shard of a dedupe key (or a schedule's key): a stable hash, so the key's unique
    index lives in one database and the dedupe check stays one query."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % shards


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    shards: int
    fold: bool = False  # the issue-16 target: no `queued` write, starts folded per batch
    statement_ms: float = 1.0  # D1: "if your average query takes 1 ms, ~1,000 queries/s"
    row_ms: float = 0.0  # extra per row of a folded multi-row statement
    consumer_batch: int = 100  # wrangler.toml's max_batch_size (the Queues maximum)
    consumer_concurrency: int = 250  # Queues: concurrent consumer invocations, at most
    batch_wait_ms: float = 0.0  # wrangler.toml's max_batch_timeout = 0
    tick_s: float = 60.0  # the cron trigger, `* * * * *`
    reads_per_s: float = 1.0  # list + counts across all runs, each spanning every shard
    seed: int = 1


@dataclass(frozen=True)
class Workload:
    name: str
    weights: dict[str, float]  # scenario -> share of runs


WORKLOADS = {
    "one-shot": Workload("one-shot", {"one-shot": 1.0}),
    "mix": Workload(
        "mix",
        {"one-shot": 0.6, "dedupe key": 0.2, "schedule occurrence": 0.1, "retried twice": 0.1},
    ),
}


@dataclass
class Result:
    model: Model
    workload: str
    runs: int
    completed: int = 0
    elapsed_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    read_latencies_ms: list[float] = field(default_factory=list)
    executed: list[int] = field(default_factory=list)  # statements run, by shard
    run_statements: int = 0  # the statements the runs' chains hold (as replayed)
    fanout_statements: int = 0  # one shard's share of fan-out (each shard runs all of it)
    shards_per_run: Counter[int] = field(default_factory=Counter)  # distinct shards per run
    batches: list[int] = field(default_factory=list)  # consumer invocations' batch sizes

    window: tuple[int, float] | None = None  # runs finished in the steady window, its ms

    @property
    def runs_per_s(self) -> float:
        if self.window is not None:
            done, ms = self.window
            return done / (ms / 1000)
        return self.completed / (self.elapsed_ms / 1000) if self.elapsed_ms else 0.0

    @property
    def statements_per_run(self) -> float:
        return self.run_statements / self.completed if self.completed else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def segments(calls: list[Call]) -> list[tuple[list[Call], list[Call]]]:
    """A chain cut into deliveries: the calls made before a consumer takes the run (the
    insert, the alarm's `queued` write), then the consumer's (from the start to the outcome,
    or to a retry's reschedule)."""
    out: list[tuple[list[Call], list[Call]]] = []
    before: list[Call] = []
    consumer: list[Call] | None = None
    for call in calls:
        if call.labels == (START,):
            consumer = [call]
            out.append((before, consumer))
            before = []
        elif call.labels == (QUEUED,) or consumer is None:
            consumer = None
            before.append(call)
        else:
            consumer.append(call)
    if before:
        out.append((before, []))
    return out


class Simulation:
    def __init__(self, trace: Trace, model: Model, workload: Workload) -> None:
        self.trace = trace
        self.model = model
        self.workload = workload
        self.env = simpy.Environment()
        self.dbs = [simpy.Resource(self.env, capacity=1) for _ in range(model.shards)]
        self.consumers = simpy.Resource(self.env, capacity=model.consumer_concurrency)
        self.inbox: list[Delivery] = []  # messages on the queue, oldest first
        self.dispatching = False
        self.rng = random.Random(model.seed)
        self.result = Result(model, workload.name, 0, executed=[0] * model.shards)
        self.ids = 0
        self.occurrences = 0
        # Fan-outs still running when the last run finishes are let finish (none start after),
        # so every statement counted as issued is also executed.
        self.stopping = False
        self.fanouts: list[simpy.Process] = []

    # -- one database call ----------------------------------------------------------------

    def call(
        self, shard: int, statements: int, rows: int = 1, hit: set[int] | None = None
    ) -> Generator[Any, Any, None]:
        if hit is not None:
            hit.add(shard)
        cost = statements * self.model.statement_ms + self.model.row_ms * (rows - 1)
        with self.dbs[shard].request() as turn:
            yield turn
            yield self.env.timeout(cost)
        self.result.executed[shard] += statements

    # -- runs -------------------------------------------------------------------------------

    def pick(self) -> Chain:
        scenario = self.rng.choices(
            list(self.workload.weights), weights=list(self.workload.weights.values())
        )[0]
        chains = self.trace.chains[scenario]
        return chains[self.rng.randrange(len(chains))]

    def place(self, chain: Chain) -> str:
        """A fresh id for one replay of `chain`, on the shard the design gives it."""
        self.ids += 1
        ulid = f"{self.ids:026d}"
        if chain.dedupe_key is not None:
            shard = key_shard(f"{chain.dedupe_key}/{self.ids}", self.model.shards)
        elif chain.schedule_id is not None:
            # A schedule fires at most once a second (`every` >= 1 s), so at hundreds of runs
            # a second each occurrence replayed is another schedule's: on that one's shard.
            self.occurrences += 1
            schedule = f"{chain.schedule_id}/{self.occurrences}"
            shard = key_shard(schedule, self.model.shards)
        else:
            shard = self.rng.randrange(self.model.shards)
        return new_run_id(ulid, shard)

    def run(self, chain: Chain) -> Generator[Any, Any, None]:
        run_id = self.place(chain)
        started = self.env.now
        hit: set[int] = set()  # the shards this run's calls went to
        for before, consumed in segments(chain.calls):
            for call in before:
                if self.model.fold and call.labels == (QUEUED,):
                    continue  # folded into the start, which accepts `scheduled`
                yield from self.run_call(run_id, call, hit)
            if consumed:  # the queue message, then a consumer invocation's turn
                delivery = Delivery(run_id, consumed, hit, self.env.event())
                self.inbox.append(delivery)
                self.dispatch()
                yield delivery.done
        self.result.shards_per_run[len(hit)] += 1
        self.result.completed += 1
        self.result.latencies_ms.append(self.env.now - started)

    def run_call(self, run_id: str, call: Call, hit: set[int]) -> Generator[Any, Any, None]:
        self.result.run_statements += call.statements
        # Routed by the id alone, as a Worker holding only the queue message would.
        yield from self.call(shard_of(run_id), call.statements, hit=hit)

    # -- the queue consumer: invocations of up to `consumer_batch` messages -----------------

    def dispatch(self) -> None:
        if not self.dispatching:
            self.dispatching = True
            self.env.process(self.dispatcher())

    def dispatcher(self) -> Generator[Any, Any, None]:
        """While messages wait: a free invocation slot takes up to a batch of them."""
        while self.inbox:
            slot = self.consumers.request()
            yield slot
            if self.model.batch_wait_ms and len(self.inbox) < self.model.consumer_batch:
                yield self.env.timeout(self.model.batch_wait_ms)
            size = self.model.consumer_batch
            batch, self.inbox = self.inbox[:size], self.inbox[size:]
            self.env.process(self.invocation(batch, slot))
        self.dispatching = False

    def invocation(
        self, batch: list[Delivery], slot: simpy.resources.resource.Request
    ) -> Generator[Any, Any, None]:
        self.result.batches.append(len(batch))
        if self.model.fold:  # one start statement per shard for the batch's runs on it
            by_shard: dict[int, list[Delivery]] = {}
            for d in batch:
                by_shard.setdefault(shard_of(d.run_id), []).append(d)
            yield simpy.AllOf(
                self.env, [self.env.process(self.folded_start(s, ds)) for s, ds in by_shard.items()]
            )
        # The messages are consumed concurrently (`Runtime.consume_batch`).
        yield simpy.AllOf(self.env, [self.env.process(self.consume(d)) for d in batch])
        self.consumers.release(slot)

    def folded_start(self, shard: int, batch: list[Delivery]) -> Generator[Any, Any, None]:
        self.result.run_statements += 1
        hits = [d.hit for d in batch]
        yield from self.call(shard, 1, rows=len(batch))
        for hit in hits:
            hit.add(shard)

    def consume(self, delivery: Delivery) -> Generator[Any, Any, None]:
        calls = delivery.calls[1:] if self.model.fold else delivery.calls
        for call in calls:
            yield from self.run_call(delivery.run_id, call, delivery.hit)
        delivery.done.succeed()

    # -- fan-out ----------------------------------------------------------------------------

    def fan_out(self, calls: list[Call]) -> Generator[Any, Any, float]:
        """The same calls on every shard at once (scatter), done when the last answers."""
        started = self.env.now

        def on(shard: int) -> Generator[Any, Any, None]:
            for call in calls:
                yield from self.call(shard, call.statements)

        self.result.fanout_statements += sum(c.statements for c in calls)
        shards = [self.env.process(on(s)) for s in range(self.model.shards)]
        self.fanouts = [p for p in self.fanouts if p.is_alive] + shards
        yield simpy.AllOf(self.env, shards)
        return float(self.env.now - started)

    def ticks(self) -> Generator[Any, Any, None]:
        while True:
            yield self.env.timeout(self.model.tick_s * 1000)
            if self.stopping:
                return
            yield from self.fan_out(self.trace.tick)

    def reads(self) -> Generator[Any, Any, None]:
        if self.model.reads_per_s <= 0:
            return
        calls = read_calls(self.trace)
        while True:
            yield self.env.timeout(self.rng.expovariate(self.model.reads_per_s / 1000))
            if self.stopping:
                return
            took = yield from self.fan_out(calls)
            self.result.read_latencies_ms.append(took)

    # -- the two experiments ------------------------------------------------------------------

    def saturate(self, runs: int, population: int) -> Result:
        """A closed loop of `population` runs in flight (each finished run is replaced by a
        new one) until `runs` have finished: every database always has work, so completions
        per second, after a warm-up, is the ceiling."""
        self.result.runs = runs
        self.env.process(self.ticks())
        self.env.process(self.reads())
        started = 0
        finished: list[float] = []

        def client() -> Generator[Any, Any, None]:
            nonlocal started
            while started < runs:
                started += 1
                yield from self.run(self.pick())
                finished.append(self.env.now)

        clients = [self.env.process(client()) for _ in range(population)]
        self.env.run(until=simpy.AllOf(self.env, clients))
        # The steady part: the middle half of the time, past the start (every run begins
        # with its insert) and before the end (clients stop one by one).
        t0, t1 = 0.25 * self.env.now, 0.75 * self.env.now
        self.result.window = (sum(1 for t in finished if t0 <= t < t1), t1 - t0)
        self.result.elapsed_ms = self.env.now
        self.finish_fanouts()
        return self.result

    def offer(self, runs: int, rate_per_s: float) -> Result:
        """Open-loop Poisson arrivals at `rate_per_s`: the latency below the ceiling."""
        self.result.runs = runs
        self.env.process(self.ticks())
        self.env.process(self.reads())
        processes: list[simpy.Process] = []

        def arrivals() -> Generator[Any, Any, None]:
            for _ in range(runs):
                processes.append(self.env.process(self.run(self.pick())))
                yield self.env.timeout(self.rng.expovariate(rate_per_s / 1000))

        self.env.run(until=self.env.process(arrivals()))
        self.env.run(until=simpy.AllOf(self.env, processes))
        self.result.elapsed_ms = self.env.now
        self.finish_fanouts()
        return self.result

    def finish_fanouts(self) -> None:
        self.stopping = True
        self.env.run(until=simpy.AllOf(self.env, [p for p in self.fanouts if p.is_alive]))


@dataclass
class Delivery:
    """A run's message on the queue, and the calls its consumer makes for it."""

    run_id: str
    calls: list[Call]
    hit: set[int]
    done: simpy.Event


def ceiling(
    trace: Trace, model: Model, workload: str, runs: int, population_per_shard: int = 200
) -> Result:
    population = population_per_shard * model.shards
    if runs < 5 * population:
        raise ValueError(f"{runs} runs is too few for {population} in flight: give >= 5x")
    return Simulation(trace, model, WORKLOADS[workload]).saturate(runs, population)


def latency(trace: Trace, model: Model, workload: str, runs: int, rate: float) -> Result:
    return Simulation(trace, model, WORKLOADS[workload]).offer(runs, rate)


def analytic_ceiling(model: Model, statements_per_run: float, fanout_per_s: float) -> float:
    """K databases' capacity, less the fan-out each runs, over the statements of a run."""
    capacity = 1000 / model.statement_ms - fanout_per_s
    return model.shards * capacity / statements_per_run


# --- the report ---------------------------------------------------------------------------


# (workload, design label, fold, consumer concurrency): the rows of the report.
DESIGNS = (
    ("one-shot", "today", False, 250),
    ("one-shot", "target, consumer as today (timeout 0, up to 250 invocations)", True, 250),
    ("one-shot", "target, max_concurrency = 4 (batches fill)", True, 4),
    ("mix", "today", False, 250),
)


def measure(
    trace: Trace, *, runs: int, shard_counts: Sequence[int], seed: int = 1
) -> list[dict[str, Any]]:
    rows = []
    for workload, design, fold, concurrency in DESIGNS:
        for k in shard_counts:
            model = Model(shards=k, fold=fold, consumer_concurrency=concurrency, seed=seed)
            top = ceiling(trace, model, workload, runs)
            fanout = sum(c.statements for c in trace.tick) / model.tick_s + model.reads_per_s * sum(
                c.statements for c in read_calls(trace)
            )
            row: dict[str, Any] = {
                "workload": workload,
                "design": design,
                "shards": k,
                "statements_per_run": top.statements_per_run,
                "mean_batch": statistics.mean(top.batches),
                "ceiling_runs_per_s": top.runs_per_s,
                "analytic_runs_per_s": analytic_ceiling(model, top.statements_per_run, fanout),
                "executed_by_shard": top.executed,
            }
            for share in (0.5, 0.8):
                rate = share * top.runs_per_s
                n = max(2000, min(runs, int(rate * 20)))  # at most 20 simulated seconds
                lat = latency(trace, model, workload, n, rate)
                row[f"at_{int(share * 100)}"] = {
                    "rate": rate,
                    "statements_per_run": lat.statements_per_run,
                    "p50_ms": _percentile(lat.latencies_ms, 0.5),
                    "p99_ms": _percentile(lat.latencies_ms, 0.99),
                    "read_p99_ms": _percentile(lat.read_latencies_ms, 0.99),
                }
            rows.append(row)
    return rows


def read_calls(trace: Trace) -> list[Call]:
    """What one scatter-gather read costs each shard: a page of `list` and `counts`."""
    return trace.reads["list (a page of runs)"] + trace.reads["counts"]


def markdown(trace: Trace, rows: list[dict[str, Any]], runs: int) -> str:
    recorded = "; ".join(
        f"{s}: {statistics.mean(c.statements for c in trace.chains[s]):g} "
        f"({', '.join(' + '.join(call.labels) for call in trace.chains[s][0].calls)})"
        for s in SCENARIOS
    )
    lines = [
        f"Recorded D1 statements per run: {recorded}. A cron tick: "
        f"{sum(c.statements for c in trace.tick)} statements on every shard; a list page and "
        f"counts: {sum(c.statements for c in read_calls(trace))} on every shard.",
        "",
        f"Ceilings from a closed loop of 200 runs in flight per shard until {runs:,} finish; "
        "1 ms a statement (about 1,000 simple queries/s per database); a cron tick every 60 s "
        "and one list + counts a second on every shard. Latency: a run's time in D1 (queueing "
        "included, no handler, Durable Object or queue hops) under Poisson arrivals at 50% and "
        "80% of the ceiling; the read's is its slowest shard's.",
        "",
        "| workload | design | K | statements/run | mean batch | ceiling runs/s | "
        "K x 1,000 / statements | p50 / p99 ms at 50% | p50 / p99 ms at 80% | "
        "list+counts p99 ms at 80% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["at_50"], r["at_80"]
        lines.append(
            f"| {r['workload']} | {r['design']} | {r['shards']} | "
            f"{r['statements_per_run']:.2f} | {r['mean_batch']:.1f} | "
            f"**{r['ceiling_runs_per_s']:,.0f}** | {r['analytic_runs_per_s']:,.0f} | "
            f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f} | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} | "
            f"{b['read_p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40000, help="runs per ceiling")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--trace-runs", type=int, default=10, help="recorded runs per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    trace = record_sync(args.trace_runs)
    rows = measure(trace, runs=args.runs, shard_counts=args.shards, seed=args.seed)
    text = markdown(trace, rows, args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shards.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "shards.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
