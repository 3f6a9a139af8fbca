"""Prometheus exposition, read from the store at scrape time, so that every gateway replica
reports the same cluster-wide numbers: sessions by status, attempts, queue depth and queue wait,
workers with their sessions and free slots, and the step phase durations that workers record."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from sdpo.schemas import TERMINAL
from sdpo.store import (
    PHASE_BUCKETS_S,
    QUEUE_WAIT_BUCKETS_S,
    Stats,
    phase_field,
    queue_wait_field,
    recorded_phases,
)


class _StatsCollector:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self):
        c = self.stats.counters
        yield _counter("sdpo_sessions_created", "Sessions created.", c.get("sessions_created", 0))
        finished = CounterMetricFamily(
            "sdpo_sessions_finished", "Sessions that ended, by status.", labels=["status"]
        )
        for status in sorted(TERMINAL):
            finished.add_metric([status], c.get(f"sessions_{status}", 0))
        yield finished
        yield self._active()
        yield _counter("sdpo_attempts", "Attempts sampled and judged.", c.get("attempts", 0))
        yield _counter("sdpo_steps", "Steps committed.", c.get("steps", 0))
        resumed = c.get("claims_resumed", 0)
        yield _counter("sdpo_sessions_resumed", "Sessions taken over from a dead worker.", resumed)
        depth = GaugeMetricFamily(
            "sdpo_queue_depth", "Jobs waiting or running, per model.", labels=["model"]
        )
        for model, jobs in self.stats.queue_depth.items():
            depth.add_metric([model], jobs)
        yield depth
        alive = self.stats.workers_alive
        yield GaugeMetricFamily("sdpo_workers_alive", "Workers with a recent heartbeat.", alive)
        yield from self._worker_slots()
        yield self._queue_wait()
        yield self._phases()

    def _worker_slots(self):
        sessions = GaugeMetricFamily(
            "sdpo_worker_sessions", "Sessions a worker is running now.", labels=["worker"]
        )
        free = GaugeMetricFamily(
            "sdpo_worker_free_slots", "Sessions a worker could start now.", labels=["worker"]
        )
        reserved = GaugeMetricFamily(
            "sdpo_worker_memory_reserved_bytes",
            "Memory a worker's sessions reserved (adapters, optimizers, largest steps).",
            labels=["worker"],
        )
        budget = GaugeMetricFamily(
            "sdpo_worker_memory_budget_bytes",
            "Memory a worker may give its sessions.",
            labels=["worker"],
        )
        for worker, slots in sorted(self.stats.worker_slots.items()):
            sessions.add_metric([worker], slots.running)
            free.add_metric([worker], slots.free)
            reserved.add_metric([worker], slots.memory_reserved)
            budget.add_metric([worker], slots.memory_budget)
        yield from (sessions, free, reserved, budget)

    def _queue_wait(self) -> HistogramMetricFamily:
        c = self.stats.counters
        family = HistogramMetricFamily(
            "sdpo_queue_wait_seconds", "Seconds from a session's creation to its first claim."
        )
        buckets = [(str(b), c.get(queue_wait_field(f"le:{b}"), 0)) for b in QUEUE_WAIT_BUCKETS_S]
        count = c.get(queue_wait_field("count"), 0)
        family.add_metric([], [*buckets, ("+Inf", count)], c.get(queue_wait_field("sum"), 0))
        return family

    def _active(self) -> GaugeMetricFamily:
        active = GaugeMetricFamily(
            "sdpo_sessions", "Sessions queued or running, per model.", labels=["status", "model"]
        )
        for model, jobs in self.stats.queue_depth.items():
            running = self.stats.queue_pending.get(model, 0)
            active.add_metric(["queued", model], max(jobs - running, 0))
            active.add_metric(["running", model], running)
        return active

    def _phases(self) -> HistogramMetricFamily:
        c = self.stats.counters
        family = HistogramMetricFamily(
            "sdpo_step_phase_seconds", "Seconds per phase of a step.", labels=["phase"]
        )
        for phase in recorded_phases(c):
            count = c.get(phase_field(phase, "count"), 0)
            buckets = [(str(b), c.get(phase_field(phase, f"le:{b}"), 0)) for b in PHASE_BUCKETS_S]
            family.add_metric(
                [phase], [*buckets, ("+Inf", count)], c.get(phase_field(phase, "sum"), 0)
            )
        return family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def render(stats: Stats) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats))
    return generate_latest(registry)
