"""The front doors for real producers: LiteLLM, OpenTelemetry GenAI spans,
CloudEvents, NDJSON over HTTP and serving nodes' metrics, mapped onto the
usage and cache contracts and published to their topics."""
