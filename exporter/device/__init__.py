"""Talking to phones and running the latency harness: adb, detection, push, telemetry, harness, bench."""
