"""How fetched records reach the stages: a partition's fetch at a time, not
one faust Event each.

faust hands every record to its streams on its own: a ``Message``, the
conductor's callback (a lock, flow-control and producer waits), an
``Event``, a queue hand-off, two tasks racing the callback against a
flow suspension, and later a per-message ack. That caps an agent near 10k
messages a second whatever the agent does, so a gateway that sends one
event per message could never be served at the rate it produces.

What we keep of faust is what the group needs: membership and the
assignment (its co-partitioning assignor), the rebalance signals our
partition claims hang on, the seek to the committed offsets after every
rebalance, and the periodic offset commit of what was acked. What we replace
is only the fetcher's drain loop (:meth:`BulkConsumer._drain_messages`): it
takes each partition's fetched records as one run of :class:`Message`s,
puts it in the topic's :class:`Inbox` (bounded in bytes: a full inbox stops
the fetching, which is the back-pressure), and the stages ack a batch's
partitions up to their last offset in one call (:meth:`BulkConsumer.ack_through`).
The checks faust's drain makes per record, it makes per fetch: no records
while the flow is stopped for a rebalance, none from an older generation
and none of a partition no longer assigned.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping
from time import monotonic
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from pipeline.stream.message import Message


class Inbox:
    """One topic's fetched messages waiting for its stages, in fetch order,
    as runs of one partition each; at most ``max_bytes`` of values (one
    run over the bound is let in, so a single large fetch never waits
    forever)."""

    def __init__(self, topic: str, max_bytes: int) -> None:
        self.topic = topic
        self.max_bytes = max_bytes
        self._runs: deque[tuple[list[Message], int]] = deque()
        self._bytes = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def full(self) -> bool:
        return self._bytes >= self.max_bytes

    async def put(self, run: list[Message], nbytes: int) -> None:
        while self.full:
            self._writable.clear()
            await self._writable.wait()
        self.put_nowait(run, nbytes)

    def put_nowait(self, run: list[Message], nbytes: int) -> None:
        self._runs.append((run, nbytes))
        self._bytes += nbytes
        self._readable.set()

    def unget(self, run: list[Message], nbytes: int) -> None:
        """Put the rest of a run taken in part back in front."""
        self._runs.appendleft((run, nbytes))
        self._bytes += nbytes

    def get_nowait(self) -> tuple[list[Message], int] | None:
        if not self._runs:
            return None
        run, nbytes = self._runs.popleft()
        self._taken(nbytes)
        return run, nbytes

    async def get(self, timeout: float | None = None) -> tuple[list[Message], int] | None:
        """The oldest run, waiting for one up to ``timeout`` seconds (None:
        none came)."""
        while not self._runs:
            self._readable.clear()
            try:
                await asyncio.wait_for(self._readable.wait(), timeout)
            except TimeoutError:
                return None
        return self.get_nowait()

    def drop(self, partitions: Iterable[int]) -> int:
        """Forget the runs of ``partitions`` (revoked: after the rebalance
        they are read again from the committed offsets, here or elsewhere);
        returns how many messages were dropped."""
        gone = set(partitions)
        kept = [(r, n) for r, n in self._runs if r[0].partition not in gone]
        dropped = sum(len(r) for r, _ in self._runs) - sum(len(r) for r, _ in kept)
        self._runs = deque(kept)
        self._taken(self._bytes - sum(n for _, n in kept))
        return dropped

    def _taken(self, nbytes: int) -> None:
        self._bytes -= nbytes
        if self._bytes < self.max_bytes:
            self._writable.set()


# How long a fetch may wait at the broker for data. faust asks for 1.5 s;
# a broker that holds a fetch over several partitions until this passes
# rather than answering when data arrives (the embedded one does) then adds
# up to that to every event's freshness. An idle worker's fetch every 100 ms
# costs next to nothing.
FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by the consumer's start(), when it builds its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class BulkConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with the drain loop replaced (see the
    module's docstring) and fetches that wait at most ``FETCH_MAX_WAIT_MS``."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        inboxes = cast(BulkApp, self.app).inboxes
        read_offset = self._read_offset
        monitor = self.app.monitor
        inbound = monitor.stream_inbound_time if monitor is not None else None
        new = tuple.__new__
        try:
            while not (self.should_stop or fetcher.should_stop):
                records, active = await self._wait_next_records(timeout=1.0)
                generation = self.app.consumer_generation_id
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    # Fetched as a rebalance began: faust's getmany seeks back
                    # to the committed offsets here, and so do we.
                    await self.perform_seek()
                    continue
                for tp, batch in records.items():
                    if self.app.consumer_generation_id != generation or not self.flow_active:
                        break
                    if (
                        active is not None
                        and tp not in active
                        and tp not in self._buffered_partitions
                    ):
                        continue
                    floor = read_offset[tp]
                    p = tp.partition
                    # tuple.__new__ makes a Message in C; a NamedTuple's own
                    # constructor is a Python function, a tenth of the drain.
                    run = [
                        new(Message, (p, r.offset, r.value or b""))
                        for r in batch
                        if floor is None or r.offset >= floor
                    ]
                    if not run:
                        continue
                    inbox = inboxes.get(tp.topic)
                    if inbox is None:
                        raise RuntimeError(f"no stages consume topic {tp.topic!r}")
                    nbytes = sum(len(m.value) for m in run)
                    if inbox.full:
                        await self.wait_first(inbox.put(run, nbytes), self.suspend_flow.wait())
                        if self.suspend_flow.is_set():
                            break  # a rebalance began while the inbox was full
                    else:
                        inbox.put_nowait(run, nbytes)
                    read_offset[tp] = run[-1].offset
                    # faust's stall check reads when a partition's stream last
                    # took a record: without it every partition with a
                    # backlog is logged as stalled after 5 minutes. A run
                    # put here is taken; stuck stages fill the inbox, the
                    # puts stop, and faust's check then rightly fires.
                    if inbound is not None:
                        inbound[tp] = monotonic()
        except BaseException as exc:
            stopped = isinstance(exc, (asyncio.CancelledError, *self.consumer_stopped_errors))
            if stopped and self.transport.app.should_stop:
                return  # the app is stopping: as faust's drain does
            raise

    def ack_through(self, topic: str, spans: Mapping[int, tuple[int, int]]) -> None:
        """The stages applied the messages of ``topic`` from the first to the
        last offset of ``spans`` in each partition: let faust's next commit
        move past them. faust commits the first unbroken run of acked
        offsets, so what lies between this span and the last acked offset
        or the committed one (a gap the log has) is acked along."""
        assigned = self.assignment()
        for partition, (first, last) in spans.items():
            tp = TP(topic, partition)
            if tp not in assigned:
                continue  # revoked since it was fetched; the new owner commits
            acked = self._acked[tp]
            committed = self._committed_offset[tp]
            start = acked[-1] + 1 if acked else first if committed is None else committed
            if last >= start:
                acked.extend(range(start, last + 1))


class BulkTransport(faust_aiokafka.Transport):
    Consumer = BulkConsumer


class BulkApp(faust.App):
    """A faust app whose consumer drains into inboxes (:meth:`inbox`)."""

    inboxes: dict[str, Inbox]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inboxes = {}

        @self.on_partitions_revoked.connect
        async def forget(sender: Any, /, *args: Any, **kwargs: Any) -> None:
            (revoked,) = args
            for inbox in self.inboxes.values():
                inbox.drop(tp.partition for tp in revoked if tp.topic == inbox.topic)

    def _new_transport(self) -> Any:
        return BulkTransport(self.conf.broker_consumer, self)

    def inbox(self, topic: Any, max_bytes: int) -> Inbox:
        """Subscribe to ``topic`` (a faust topic of this app): its records
        go to the returned inbox."""
        (name,) = topic.topics
        inbox = self.inboxes[name] = Inbox(name, max_bytes)
        self.topics.add(topic)
        return inbox

    def ack_through(self, topic: str, spans: Mapping[int, tuple[int, int]]) -> None:
        consumer = self.consumer
        assert isinstance(consumer, BulkConsumer)
        consumer.ack_through(topic, spans)
