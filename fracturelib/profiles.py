"""Run profiles: ``params/<name>.yaml`` lists the notebooks to run and their parameters
(quick: embedded data; full: the full datasets; ci: tiny, for nbval)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import config

#: the variable nbval runs set so that notebooks shrink themselves to the ci profile
PROFILE_ENV = "FRACTURELIB_PROFILE"


@dataclass
class Run:
    name: str
    notebook: str
    parameters: dict = field(default_factory=dict)


def load_profile(profile: str) -> list[Run]:
    """``params/<profile>.yaml`` (or a path to a YAML file) -> runs in order."""
    p = Path(profile)
    if not p.suffix:
        p = config.PARAMS_DIR / f"{profile}.yaml"
    if not p.exists():
        names = sorted(x.stem for x in config.PARAMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"profile {profile!r} not found ({p}); available: {', '.join(names)}")
    spec = yaml.safe_load(p.read_text()) or {}
    defaults = spec.get("defaults", {})
    return [Run(r.get("name", r["notebook"]), r["notebook"], {**defaults, **r.get("parameters", {})})
            for r in spec["runs"]]
