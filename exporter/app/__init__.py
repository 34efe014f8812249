"""The Android demo app: bundling an export into the Gradle project, and its adb-driven benchmark."""
