"""Test helper: configure the STAND-IN adb (tests/standin_adb/adb) for a test. Not a real device."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADB = HERE / "adb"
FAKE_HARNESS = HERE / "fake_harness"
FAKE_LLAMA_MAIN = HERE / "fake_llama_main"

SERIALS = {  # serial -> recorded phone under phones/
    "R5CX10S24": "galaxy_s24_sm8650",
    "10AD5X100P": "vivo_x100pro_mt6989",
    "3A281FDJH008": "pixel8_zuma",
    "R5CT11S22": "galaxy_s22_sm8450_android11",
    # emulated arm64 phones: pushed aarch64 programs run under qemu (needs `bash scripts/setup.sh --arm`)
    "R5CR21S21A": "galaxy_s21_sm8350_arm64",
    "R5CT22S22A": "galaxy_s22_sm8450_arm64",
}
ARM64_SERIALS = ("R5CR21S21A", "R5CT22S22A")


class StandIn:
    """Writes a stand-in config; `env` points EXPORTER_ADB and STANDIN_ADB_CONFIG at it."""

    def __init__(self, tmp_path: Path, devices: list[dict]):
        self.dir = Path(tmp_path) / "standin"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.json"
        self.config.write_text(json.dumps({"state_dir": str(self.dir / "state"), "devices": devices}))
        self.adb = str(ADB)

    @classmethod
    def phones(cls, tmp_path: Path, *serials: str, **per_serial: dict) -> "StandIn":
        devices = []
        for s in serials:
            d = {"serial": s, "phone": SERIALS[s]}
            d.update(per_serial.get(s, {}))
            devices.append(d)
        return cls(tmp_path, devices)

    @property
    def env(self) -> dict[str, str]:
        return {"EXPORTER_ADB": self.adb, "STANDIN_ADB_CONFIG": str(self.config)}

    def root(self, serial: str) -> Path:
        """The folder that stands in for the phone's filesystem."""
        return self.dir / "state" / serial / "root"

    def log(self, serial: str) -> str:
        path = self.dir / "state" / serial / "commands.log"
        return path.read_text() if path.exists() else ""
