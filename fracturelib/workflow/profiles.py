"""Run profiles: ``params/<name>.yaml`` lists the notebooks to run and their parameters
(quick: embedded data; full: the full datasets; ci: tiny, for nbval)."""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fracturelib import config

#: the variable nbval runs set so that notebooks shrink themselves to the ci profile
PROFILE_ENV = "FRACTURELIB_PROFILE"


class ProfileError(ValueError):
    """An unknown profile, or a parameter the notebooks cannot take; the message says which."""


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
    if not p.is_file():
        names = sorted(x.stem for x in config.PARAMS_DIR.glob("*.yaml"))
        raise ProfileError(f"profile {profile!r} not found ({p}); available: {', '.join(names)}, "
                           "or the path of a YAML file")
    try:
        spec = yaml.safe_load(p.read_text()) or {}
        defaults = spec.get("defaults", {})
        return [Run(r.get("name", r["notebook"]), r["notebook"],
                    {**defaults, **r.get("parameters", {})}) for r in spec["runs"]]
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise ProfileError(f"{p}: not a valid profile ({_one_line(e)}); it needs a 'runs' "
                           "list of {notebook, parameters}, see params/quick.yaml") from None


def _one_line(e: Exception) -> str:
    """A YAML or lookup error in one line: where and what, without the source excerpt."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def notebook_path(run: Run) -> Path:
    return (Path(run.notebook) if run.notebook.endswith(".ipynb")
            else config.NOTEBOOKS_DIR / f"{run.notebook}.ipynb")


def notebook_parameters(run: Run) -> dict:
    """Name -> default value of the notebook's ``parameters`` cell (papermill's own reading).
    Read once per notebook version: the checks, the cache key and the sweep all ask for it."""
    path = notebook_path(run)
    return dict(_parameters(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _parameters(path: str, _mtime_ns: int) -> dict:
    import papermill as pm

    found = pm.inspect_notebook(path)
    out = {}
    for name, spec in found.items():
        try:
            out[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            out[name] = None
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """``["epochs=3", "image_size=192"]`` -> values read as YAML (numbers, lists, strings)."""
    out = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            raise ProfileError(f"-p {kv!r}: expected KEY=VALUE, e.g. -p epochs=3")
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""     # "-p data_dir=" is empty text
        except yaml.YAMLError as e:
            raise ProfileError(f"-p {kv!r}: the value is not valid YAML ({_one_line(e)})") from None
    return out


def check_parameter(name: str, value, default) -> str:
    """Why ``value`` cannot replace ``default`` for parameter ``name`` ("" when it can)."""
    if default is None or isinstance(default, (list, dict)) and isinstance(value, (list, dict)):
        return ""
    kind = type(default)
    if kind is bool and not isinstance(value, bool):
        return "expects true or false"
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "expects a whole number"
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "expects a number"
    if kind is str and not isinstance(value, str):
        return "expects text"
    if kind in (int, float) and not isinstance(default, bool):
        if name.endswith("_fraction") and not 0 < value <= 1:
            return "expects a share above 0 and at most 1"
        if "seed" in name and value < 0:
            return "expects 0 or more"
        if default > 0 and "seed" not in name and value <= 0:
            return "expects a number above 0"
    return ""


def check_overrides(runs: list[Run], extra: dict) -> None:
    """Refuse, before anything runs, a parameter no selected notebook takes or a value it cannot."""
    params = {r.name: notebook_parameters(r) for r in runs}
    for name, value in extra.items():
        takers = {n: p[name] for n, p in params.items() if name in p}
        if not takers:
            known = sorted({k for p in params.values() for k in p} - {"output_dir"})
            raise ProfileError(f"-p {name}: no selected notebook has this parameter; they take: "
                               f"{', '.join(known)}")
        for run_name, default in takers.items():
            why = check_parameter(name, value, default)
            if why:
                raise ProfileError(f"-p {name}={value!r}: {run_name} {why} (its default is {default!r})")
