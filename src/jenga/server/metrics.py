"""Prometheus metrics of the server: memory per group, prefix hits, queues,
latencies and request outcomes.

Latency histograms and outcome counters are fed by the AsyncEngine hooks
on the event loop.  Memory and scheduler figures are read by a
`snapshot(engine)` that runs on the engine thread (between steps, so it is
consistent), and exported by a collector at scrape time.  Each app has its
own `CollectorRegistry`: no process-wide metric state.

Per-group "free" bytes are the free small-page slots inside large pages
the group holds; bytes no group holds are `jenga_pool_free_bytes` (any
group may take them: there is no static split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True)
class GroupSnapshot:
    gid: int
    label: str
    used_bytes: int
    cached_bytes: int
    free_bytes: int
    hit_tokens: int


@dataclass(frozen=True)
class EngineSnapshot:
    """Memory and scheduler state at one step boundary."""

    groups: tuple[GroupSnapshot, ...]
    pool_bytes: int
    pool_free_bytes: int
    free_large_pages: int
    utilisation: float
    num_running: int
    num_waiting: int
    num_preemptions: int
    num_pages_moved: int
    prompt_tokens: int
    hit_tokens: int

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def snapshot(engine: Any) -> EngineSnapshot:
    """Read `engine.scheduler` (stats, manager); call on the engine thread."""
    sched = engine.scheduler
    manager, stats = sched.manager, sched.stats
    usage = manager.usage()
    per_group_hits = list(stats.hit_tokens_per_group) + [0] * len(usage.per_group)
    groups = tuple(GroupSnapshot(g.gid, g.label, g.used_bytes, g.cached_bytes,
                                 g.free_bytes, per_group_hits[g.gid])
                   for g in usage.per_group)
    return EngineSnapshot(groups, usage.pool_bytes, usage.free_bytes, usage.free_large_pages,
                          usage.utilisation, len(sched.running), len(sched.waiting), stats.num_preemptions,
                          stats.num_pages_moved, stats.prompt_tokens, stats.hit_tokens)


class _SnapshotCollector:
    """Exports the latest EngineSnapshot as gauges and counters."""

    def __init__(self) -> None:
        self.snap: EngineSnapshot | None = None

    def describe(self) -> list:
        return []

    def collect(self):
        s = self.snap
        if s is None:
            return
        labels = ("group", "label")
        for name, doc, attr in (("jenga_group_used_bytes", "bytes in pages held by requests", "used_bytes"),
                                ("jenga_group_cached_bytes", "bytes in evictable prefix-cache pages", "cached_bytes"),
                                ("jenga_group_free_bytes", "free bytes inside large pages the group holds",
                                 "free_bytes")):
            fam = GaugeMetricFamily(name, doc, labels=labels)
            for g in s.groups:
                fam.add_metric((str(g.gid), g.label), getattr(g, attr))
            yield fam
        rate = GaugeMetricFamily("jenga_group_prefix_cache_hit_rate",
                                 "prompt tokens this group alone would have hit / prompt tokens", labels=labels)
        for g in s.groups:
            rate.add_metric((str(g.gid), g.label), g.hit_tokens / s.prompt_tokens if s.prompt_tokens else 0.0)
        yield rate
        for name, doc, value in (
                ("jenga_pool_bytes", "bytes of the KV pool", s.pool_bytes),
                ("jenga_pool_free_bytes", "bytes in large pages no group holds", s.pool_free_bytes),
                ("jenga_large_pages_free", "large pages no group holds", s.free_large_pages),
                ("jenga_kv_utilisation", "bytes of state running requests need / pool bytes", s.utilisation),
                ("jenga_prefix_cache_hit_rate", "prompt tokens served from the prefix cache / prompt tokens",
                 s.hit_rate),
                ("jenga_num_requests_running", "requests running", s.num_running),
                ("jenga_num_requests_waiting", "requests waiting", s.num_waiting)):
            yield GaugeMetricFamily(name, doc, value=value)
        for name, doc, value in (("jenga_preemptions", "requests preempted", s.num_preemptions),
                                 ("jenga_pages_moved", "small pages moved by compaction to free a large page",
                                  s.num_pages_moved),
                                 ("jenga_prefix_cache_queries", "prompt tokens looked up", s.prompt_tokens),
                                 ("jenga_prefix_cache_hits", "prompt tokens hit", s.hit_tokens)):
            yield CounterMetricFamily(name, doc, value=value)


class ServerMetrics:
    """All metrics of one server (own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("jenga_time_to_first_token_seconds", "arrival to first output token",
                              buckets=_TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("jenga_time_per_output_token_seconds",
                              "mean time between output tokens after the first", buckets=_TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("jenga_e2e_request_latency_seconds", "arrival to last token",
                             buckets=_E2E_BUCKETS, registry=r)
        self.requests = Counter("jenga_requests", "requests ended, by finish reason",
                                labelnames=("finish_reason",), registry=r)
        self.rejected = Counter("jenga_requests_rejected", "requests refused before running, by cause",
                                labelnames=("cause",), registry=r)
        self.prompt_tokens = Counter("jenga_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter("jenga_generation_tokens", "output tokens sent", registry=r)
        self._collector = _SnapshotCollector()
        r.register(self._collector)

    def on_output(self, stream: Any, out: Any, now: float) -> None:
        """AsyncEngine hook: record a finished request's latencies."""
        if not out.finished:
            return
        choice = out.outputs[0]
        n = sum(len(c.token_ids) for c in out.outputs)   # all n completions of a parallel-sampling request
        self.requests.labels(str(getattr(choice.finish_reason, "value", choice.finish_reason))).inc()
        self.prompt_tokens.inc(len(out.prompt_token_ids))
        self.generation_tokens.inc(n)
        self.e2e.observe(now - stream.arrival)
        if stream.first_token_time is not None:
            self.ttft.observe(stream.first_token_time - stream.arrival)
            if n > 1:
                self.tpot.observe((now - stream.first_token_time) / (n - 1))

    def on_close(self, stream: Any, reason: str | None) -> None:
        """AsyncEngine hook: a request that ended without its final output
        (reason "abort": the client left; "error": the engine failed it)
        counts with the tokens it had, prompt and generated alike."""
        if reason is not None:
            self.requests.labels(reason).inc()
            self.prompt_tokens.inc(stream.num_prompt_tokens)
            self.generation_tokens.inc(stream.num_output_tokens)

    def render(self, snap: EngineSnapshot | None) -> bytes:
        """Prometheus text exposition with `snap` as the engine state."""
        self._collector.snap = snap
        return generate_latest(self.registry)
