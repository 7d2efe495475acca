"""Named experiment presets: readable TOML files shipped in ``impala_frodo/config/presets/``.

Each file states where its numbers come from (the report, the FRODO paper,
or our choice). ``impala-frodo presets`` lists them.
"""

from __future__ import annotations

from pathlib import Path

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, load_config, merge
from impala_frodo.utils import shorten

PRESET_DIR = Path(__file__).parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    """The preset's file; :class:`ConfigError` for a name that is not a preset's."""
    names = preset_names()
    if name not in names:  # a name, never a path: "../x" or a 10,000-character one
        raise ConfigError(f"unknown preset {shorten(name)}; available: {', '.join(names)}")
    return PRESET_DIR / f"{name}.toml"


def preset_summary(name: str) -> str:
    """The first comment line of the preset file."""
    for line in preset_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def load_preset(name: str) -> Config:
    """The preset's config, which records its name (``Config.preset``)."""
    return merge(load_config(preset_path(name)), {"preset": name})
