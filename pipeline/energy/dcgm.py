"""NVIDIA dcgm-exporter's Prometheus text format to GPU telemetry samples.

Read with prometheus_client's own parser. ``DCGM_FI_DEV_POWER_USAGE`` is in
watts, ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` in millijoules; each GPU is
identified by its host label (our node_id: ``Hostname`` in every released
dcgm-exporter, ``hostname`` in its newer builds; both are read) and its
``gpu`` label, and ``modelName`` is kept. The Kubernetes labels the exporter
adds when it maps GPUs to pods (``pod``, ``namespace``, ``container``, and
``exported_*`` once Prometheus relabelled them) name the workload, not the
GPU: they do not split a GPU's samples. A scrape has no timestamps of its own unless the
exporter writes them, so the caller gives the scrape time.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from prometheus_client.parser import text_string_to_metric_families

from models.contracts import GpuTelemetrySample

POWER = "DCGM_FI_DEV_POWER_USAGE"
ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"


def parse_scrape(text: str, scraped_at: datetime) -> list[GpuTelemetrySample]:
    power: dict[tuple[str, str], Decimal] = {}
    energy: dict[tuple[str, str], int] = {}
    models: dict[tuple[str, str], str] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (POWER, ENERGY):
            continue
        for sample in family.samples:
            labels = sample.labels
            host = labels.get("Hostname") or labels.get("hostname", "")
            gpu_key = (host, labels.get("gpu", ""))
            if not all(gpu_key):
                continue
            if "modelName" in labels:
                models[gpu_key] = labels["modelName"]
            if family.name == POWER:
                power[gpu_key] = Decimal(repr(sample.value))
            else:
                energy[gpu_key] = int(sample.value)
    return [
        GpuTelemetrySample(
            node_id=node,
            gpu=gpu,
            ts=scraped_at,
            power_w=float(power[(node, gpu)]),
            energy_mj=energy.get((node, gpu)),
            model=models.get((node, gpu)),
        )
        for node, gpu in sorted(power)
    ]
