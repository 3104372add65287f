"""Seeded, realistic traffic: usage, GPU telemetry and cache events, and months of daily spend."""
