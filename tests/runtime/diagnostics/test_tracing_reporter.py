"""UdpReporter: batches under the UDP limit, a bounded queue, the thread joined on close."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from jaeger_client.sampler import ConstSampler
from jaeger_client.thrift_gen.agent import Agent
from jaeger_client.tracer import Tracer
from thrift.protocol import TCompactProtocol
from thrift.transport import TTransport

from msuite.runtime.diagnostics.tracing import UdpReporter


@pytest.fixture
def agent() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        yield sock


def received(sock: socket.socket) -> list[tuple[int, list[str]]]:
    """Each datagram's size and the operation names of its spans, until the socket is quiet."""
    found = []
    while True:
        try:
            data = sock.recv(70_000)
        except TimeoutError:
            return found
        protocol = TCompactProtocol.TCompactProtocol(TTransport.TMemoryBuffer(data))
        assert protocol.readMessageBegin()[0] == "emitBatch"
        args = Agent.emitBatch_args()
        args.read(protocol)
        assert args.batch.process.serviceName == "svc"
        found.append((len(data), [span.operationName for span in args.batch.spans]))


def tracer_for(reporter: UdpReporter) -> Tracer:
    return Tracer("svc", reporter, ConstSampler(True), tags={"hostname": "h", "ip": "127.0.0.1"})


def test_spans_arrive_in_batches_and_the_thread_ends(agent: socket.socket) -> None:
    reporter = UdpReporter("127.0.0.1", agent.getsockname()[1], flush_interval=10.0, batch_size=4)
    tracer = tracer_for(reporter)
    reporter.start()
    for i in range(10):
        tracer.start_span(f"op{i}").finish()
    assert reporter.close_and_join(5.0)
    datagrams = received(agent)
    assert [names for _, names in datagrams] == [
        ["op0", "op1", "op2", "op3"],
        ["op4", "op5", "op6", "op7"],
        ["op8", "op9"],
    ]
    assert (reporter.sent, reporter.dropped, reporter.failed) == (10, 0, 0)
    assert "msuite-jaeger" not in [t.name for t in threading.enumerate()]


def test_the_queue_is_bounded(agent: socket.socket) -> None:
    # batches bigger than the queue: nothing wakes the thread before close
    reporter = UdpReporter(
        "127.0.0.1", agent.getsockname()[1], flush_interval=10.0, batch_size=100, queue_limit=3
    )
    tracer = tracer_for(reporter)
    reporter.start()
    for i in range(5):
        tracer.start_span(f"op{i}").finish()
    assert reporter.dropped == 2
    assert reporter.close_and_join(5.0)
    assert [names for _, names in received(agent)] == [["op0", "op1", "op2"]]


def test_batches_over_the_udp_limit_are_split_and_a_huge_span_dropped(agent: socket.socket) -> None:
    reporter = UdpReporter("127.0.0.1", agent.getsockname()[1], flush_interval=10.0, batch_size=200)
    tracer = tracer_for(reporter)
    reporter.start()
    for i in range(120):
        span = tracer.start_span(f"op{i}")
        span.set_tag("payload", "x" * 1000)  # jaeger-client keeps 1024 characters of a value
        span.finish()
    huge = tracer.start_span("huge")
    for n in range(80):
        huge.set_tag(f"t{n}", "y" * 1000)
    huge.finish()
    assert reporter.close_and_join(5.0)
    datagrams = received(agent)
    assert len(datagrams) > 1
    assert all(size <= UdpReporter.MAX_PACKET for size, _ in datagrams)
    assert [name for _, names in datagrams for name in names] == [f"op{i}" for i in range(120)]
    assert (reporter.sent, reporter.dropped) == (120, 1)


def test_no_agent_listening_counts_failures_without_raising() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reporter = UdpReporter("127.0.0.1", port, flush_interval=0.05, batch_size=1)
    tracer = tracer_for(reporter)
    reporter.start()
    for i in range(5):
        tracer.start_span(f"op{i}").finish()
    assert reporter.close_and_join(5.0)
    assert reporter.sent + reporter.failed == 5
