"""The dcgm-exporter parser: a real scrape becomes telemetry samples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipeline.energy.dcgm import parse_scrape

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


SCRAPE = (Path(__file__).resolve().parents[2] / "data" / "dcgm_scrape.prom").read_text()


def test_dcgm_exporter_text_becomes_samples() -> None:
    samples = parse_scrape(SCRAPE, T0)
    assert [(s.node_id, s.gpu, s.power_w, s.energy_mj) for s in samples] == [
        ("gpu-a1", "0", 612.5, 123456789012),
        ("gpu-a1", "1", 88.25, None),  # no counter: energy will come from power
    ]
    assert samples[0].model == "NVIDIA H100 80GB HBM3" and samples[0].ts == T0


def test_newer_exporters_lower_case_host_label_and_kubernetes_labels() -> None:
    text = (Path(__file__).resolve().parents[2] / "data" / "dcgm_k8s_hostname.prom").read_text()
    samples = parse_scrape(text, T0)
    # One sample per GPU whatever pod it serves; the host is the node.
    assert [(s.node_id, s.gpu) for s in samples] == [
        ("gpu-node-a", "0"),
        ("gpu-node-a", "1"),
        ("gpu-node-a", "2"),
    ]
    assert [s.power_w for s in samples] == [512.347, 438.902, 71.215]
    assert samples[0].energy_mj == 184429931024
