"""Run profiles: ``params/<name>.yaml`` lists the notebooks to run and their parameters
(quick: embedded data; full: the full datasets; ci: tiny, for nbval)."""
from __future__ import annotations

import ast
import functools
import math
import re
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


#: Limits on what a user hands in: a profile file, one ``-p`` value, YAML nesting, a name.
MAX_PROFILE_BYTES = 1 << 20
MAX_VALUE_BYTES = 4096
MAX_DEPTH = 16
MAX_ITEMS = 1000
#: A run name is one safe path component (its reports are ``<out>/<name>.html``).
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases (``&a``/``*a``: a few bytes that expand to gigabytes) and
    with bounded nesting; everything else as ``yaml.safe_load``."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_yaml(text: str):
    """Parse user YAML (a profile, a ``-p`` value) without aliases, deeper than ``MAX_DEPTH``.

    Args:
        text: the YAML text.

    Returns:
        The value (``yaml.safe_load`` types).

    Raises:
        yaml.YAMLError: malformed, aliased, too deep.
        ValueError: a value YAML cannot build (e.g. the date 2001-02-30).
    """
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def load_profile(profile: str) -> list[Run]:
    """``params/<profile>.yaml`` (or a path to a YAML file) -> runs in order.

    The file must be UTF-8 YAML without aliases, at most ``MAX_PROFILE_BYTES``; each run name is
    one safe path component and unique; each parameter goes through :func:`check_value`.

    Args:
        profile: a profile name in ``params/`` (no suffix), or the path of a YAML file.

    Returns:
        The runs in file order, each with the profile's ``defaults`` under its own parameters.

    Raises:
        ProfileError: the file is missing, too large, unreadable, not UTF-8 or not a valid profile,
            or a run name, notebook or parameter is invalid (one line).
    """
    p = Path(profile)
    if not p.suffix:
        p = config.PARAMS_DIR / f"{profile}.yaml"
    if not p.is_file():
        names = sorted(x.stem for x in config.PARAMS_DIR.glob("*.yaml"))
        raise ProfileError(f"profile {profile!r} not found ({p}); available: {', '.join(names)}, "
                           "or the path of a YAML file")
    try:
        if p.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{p}: larger than {MAX_PROFILE_BYTES >> 10} KiB; not a profile")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"{p}: not UTF-8 text (byte {e.start}); save the profile as UTF-8") from None
    except OSError as e:
        raise ProfileError(f"{p}: cannot be read ({e.strerror or e})") from None
    try:
        spec = safe_yaml(text) or {}
        defaults = spec.get("defaults", {}) or {}
        runs = [Run(r.get("name", r["notebook"]), r["notebook"],
                    {**defaults, **(r.get("parameters", {}) or {})}) for r in spec["runs"]]
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
        raise ProfileError(f"{p}: not a valid profile ({_one_line(e)}); it needs a 'runs' "
                           "list of {notebook, parameters}, see params/quick.yaml") from None
    seen = set()
    for run in runs:
        if not isinstance(run.name, str) or not RUN_NAME.fullmatch(run.name) or run.name in seen:
            why = "is used twice" if run.name in seen else ("must be letters, digits and . _ + - "
                                                             "(it names the report files)")
            raise ProfileError(f"{p}: run name {run.name!r} {why}")
        seen.add(run.name)
        if not isinstance(run.notebook, str) or "\0" in run.notebook or not run.notebook.strip():
            raise ProfileError(f"{p}: run {run.name}: notebook {run.notebook!r} is not a notebook name")
        if not isinstance(run.parameters, dict):
            raise ProfileError(f"{p}: run {run.name}: parameters must be a mapping")
        for k, v in run.parameters.items():
            why = _check_name(k) or check_value(k, v)
            if why:
                raise ProfileError(f"{p}: run {run.name}: {_shown(k)}={_shown(v)} {why}")
    return runs


def _one_line(e: Exception) -> str:
    """A YAML or lookup error in one line: where and what, without the source excerpt."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def notebook_path(run: Run) -> Path:
    """The notebook file of ``run``: its ``notebook`` as given when it ends in ``.ipynb``.

    Args:
        run: the run.

    Returns:
        That path, else ``<notebooks>/<notebook>.ipynb``.
    """
    return (Path(run.notebook) if run.notebook.endswith(".ipynb")
            else config.NOTEBOOKS_DIR / f"{run.notebook}.ipynb")


def notebook_parameters(run: Run) -> dict:
    """Name -> default value of the notebook's ``parameters`` cell (papermill's own reading).
    Read once per notebook version: the checks, the cache key and the sweep all ask for it.

    Args:
        run: the run whose notebook to read.

    Returns:
        A new dict of parameter name -> default (None where the default is not a Python literal).
    """
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


@dataclass(frozen=True)
class Rule:
    """What one parameter accepts: ``kind`` ``int``, ``float``, ``str`` or ``list`` (of text),
    an inclusive range ``low``..``high`` (``low_open``/``high_open``: that end excluded),
    ``choices`` (a tuple, or a function returning one, read when needed), ``nullable``: None too,
    ``min_items``: the shortest list allowed."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    choices_from: object = None
    nullable: bool = False
    min_items: int = 0

    def allowed(self) -> tuple | None:
        """The allowed values: ``choices``, else what ``choices_from`` returns now.

        Returns:
            The tuple of values, or None when any value of the kind is allowed (also when
            ``choices_from`` needs a module this install lacks).
        """
        if self.choices is not None:
            return self.choices
        if self.choices_from is not None:
            try:
                return tuple(self.choices_from())
            except ImportError:            # a lighter install without that module: no check
                return None
        return None

    def describe(self, wrong_type: bool = False) -> str:
        """The reason a value breaks the rule (``wrong_type``: it is not even the right kind).

        Args:
            wrong_type: name the expected kind rather than the range.

        Returns:
            The reason, worded to follow ``name=value`` (e.g. ``expects a number from 32 to 1024``).
        """
        ok = self.allowed()
        if self.kind == "list":
            text = ("expects a list of: " + ", ".join(map(str, ok)) if ok else "expects a list of text") + (
                f" ({f'at least {self.min_items}; ' if self.min_items else ''}written [a, b])")
        elif ok:
            text = "expects one of: " + ", ".join(map(str, ok))
        elif wrong_type or (self.low is None and self.high is None):
            text = {"int": "expects a whole number", "float": "expects a number", "str": "expects text"}[self.kind]
        else:
            text = "expects a number"
            if self.low is not None:
                text += f" {'above' if self.low_open else 'from'} {self.low:g}"
            if self.high is not None:
                both = self.low is not None and not self.low_open and not self.high_open
                end = "to" if both else ("and " if self.low is not None else "") + (
                    "below" if self.high_open else "at most")
                text += f" {end} {self.high:g}"
        return text + (", or null" if self.nullable else "")


def _cam_names() -> list[str]:
    from fracturelib.explain import cams
    return cams.names()


def _strategies() -> tuple[str, ...]:
    from fracturelib.models import distribute
    return distribute.STRATEGIES


def _backbones() -> list[str]:
    from fracturelib.models import backbones
    return [*backbones.REGISTRY, ""]          # "" skips notebook 02's transfer model


_SIZE = Rule("int", 32, 1024)
_RATE = Rule("float", 0, 1, low_open=True)
_SHARE = Rule("float", 0, 1, low_open=True)
_COUNT = Rule("int", 1, 100_000)
#: The one table of per-parameter rules for every value a user hands in (``-p``, profiles,
#: ``--grid``); parameters not named here get the general checks (finite numbers, bounded
#: text and lists) and, in :func:`check_parameter`, the type and sign of the notebook's default.
RULES: dict[str, Rule] = {
    "image_size": _SIZE, "transfer_image_size": _SIZE, "localiser_size": Rule("int", 64, 1024),
    "batch_size": Rule("int", 1, 4096),
    "channels": Rule("int", choices=(1, 3)),
    "learning_rate": _RATE, "lr_head": _RATE, "lr_fine": _RATE, "transfer_lr_fine": _RATE,
    "target_sensitivity": _SHARE, "specificity_target": _SHARE,
    "prevalence": Rule("float", 0, 1, low_open=True, high_open=True, nullable=True),
    "val_fraction": Rule("float", 0, 1, low_open=True, high_open=True),
    "test_fraction": Rule("float", 0, 1, low_open=True, high_open=True),
    "seed": Rule("int", 0, 2**32 - 1),
    "n_boot": _COUNT, "max_images": _COUNT, "faith_images": _COUNT,
    "intensity_per_class": Rule("int", 1, 100_000), "samples_per_class": Rule("int", 1, 1000),   # 01 divides by them
    "duplicate_pairs": Rule("int", 1, 1000),
    "patience": Rule("int", 0, 1000), "tolerance_px": Rule("int", 0, 10_000),
    "alpha": Rule("float", 0, 2, low_open=True),
    "epochs": Rule("int", 0, 1000, low_open=True),
    "strategy": Rule("str", choices_from=_strategies),
    "backbone": Rule("str", choices_from=_backbones), "transfer_backbone": Rule("str", choices_from=_backbones),
    "methods": Rule("list", choices_from=_cam_names, min_items=1),    # 04 explains with methods[0]
    "faith_methods": Rule("list", choices_from=_cam_names, min_items=1),
    "transfer_skip": Rule("list", choices_from=_cam_names),
}
#: Parameters whose positive default may be set to 0: 0 skips that stage (here: no fine-tuning).
ZERO_SKIPS = frozenset({"phase2_epochs", "transfer_phase2_epochs"})
RULES.update({name: Rule("int", 0, 1000) for name in ZERO_SKIPS})
#: Rules by name pattern, after the table: (suffix or exact name, rule). Other epochs: at least one.
SUFFIX_RULES = (("_epochs", Rule("int", 1, 1000)), ("_fraction", _SHARE))


def rule_for(name: str) -> Rule | None:
    """The rule of parameter ``name`` (:data:`RULES`, else a :data:`SUFFIX_RULES` match).

    Args:
        name: the parameter.

    Returns:
        Its Rule, or None when only the general checks apply.
    """
    if name in RULES:
        return RULES[name]
    return next((r for suffix, r in SUFFIX_RULES if name.endswith(suffix)), None)


def _shown(value, limit: int = 60) -> str:
    """A value in one line, shortened."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


def _check_name(name) -> str:
    if not isinstance(name, str) or not name.isidentifier() or len(name) > 100:
        return "is not a parameter name (letters, digits and _)"
    return ""


def _general(value, depth: int = 0, count: list | None = None) -> str:
    """Why ``value`` is no value a notebook parameter can hold ("" when it can)."""
    count = [0] if count is None else count
    count[0] += 1
    if count[0] > MAX_ITEMS or depth > MAX_DEPTH:
        return f"is too large (at most {MAX_ITEMS} items, {MAX_DEPTH} levels)"
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return "" if abs(value) < 2**63 else "is too large a number"
    if isinstance(value, float):
        return "" if math.isfinite(value) else "expects a finite number (not NaN or infinity)"
    if isinstance(value, str):
        if len(value) > MAX_VALUE_BYTES:
            return f"is longer than {MAX_VALUE_BYTES} characters"
        return "" if "\0" not in value else "contains a NUL character"
    if isinstance(value, list):
        return next((w for v in value if (w := _general(v, depth + 1, count))), "")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) or (w := _general(k, depth + 1, count)):
                return "has a key that is not text or a number"
            if w := _general(v, depth + 1, count):
                return w
        return ""
    return f"expects a number, text, true/false, a list or a mapping (not {type(value).__name__})"


def check_value(name: str, value) -> str:
    """Why ``value`` cannot be parameter ``name`` by the rules alone ("" when it can): the general
    checks (finite numbers, bounded text and lists, plain YAML types) and :data:`RULES`.

    Args:
        name: the parameter.
        value: its value as parsed from YAML.

    Returns:
        The reason, worded to follow ``name=value``; "" when the value is fine.
    """
    why = _general(value)
    if why:
        return why
    rule = rule_for(name)
    if rule is None or (value is None and rule.nullable):
        return ""
    if rule.kind == "list":
        ok = rule.allowed()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) < rule.min_items:
            return rule.describe()
        bad = [v for v in value if ok is not None and v not in ok]
        return f"has {_shown(bad[0])}: {rule.describe()}" if bad else ""
    if rule.kind == "str":
        ok = rule.allowed()
        return "" if isinstance(value, str) and (ok is None or value in ok) else rule.describe()
    if isinstance(value, bool) or not isinstance(value, int if rule.kind == "int" else (int, float)):
        return rule.describe(wrong_type=True)
    ok = rule.allowed()
    if ok is not None:
        return "" if value in ok else rule.describe()
    if rule.low is not None and (value < rule.low or rule.low_open and value == rule.low):
        return rule.describe()
    if rule.high is not None and (value > rule.high or rule.high_open and value == rule.high):
        return rule.describe()
    return ""


_EXPONENT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


def parse_value(text: str):
    """One user value (``-p``/``--grid``) read as YAML: no aliases, bounded size and nesting.

    Args:
        text: the text after ``=``; empty text is the empty string.

    Returns:
        The value.

    Raises:
        ProfileError: not valid YAML, too long, aliased or too deep (one line).
    """
    if len(text) > MAX_VALUE_BYTES:
        raise ProfileError(f"the value is longer than {MAX_VALUE_BYTES} characters")
    if not text.strip():
        return ""                                  # "-p data_dir=" is empty text
    try:
        value = safe_yaml(text)
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            return float(value)                    # YAML 1.1 reads 1e-3 as text; users mean a number
        return value
    except yaml.YAMLError as e:
        raise ProfileError(f"the value is not valid YAML ({_one_line(e)})") from None
    except (ValueError, TypeError, OverflowError, RecursionError, AttributeError) as e:
        raise ProfileError(f"the value cannot be read ({_one_line(e)})") from None


def parse_overrides(pairs: list[str], flag: str = "-p") -> dict:
    """``["epochs=3", "image_size=192"]`` -> values read as YAML (numbers, lists, strings), each
    checked by :func:`check_value`; anything else is one :class:`ProfileError` line.

    Args:
        pairs: ``KEY=VALUE`` texts.
        flag: the option they came from, for the messages.

    Returns:
        Parameter name -> value.

    Raises:
        ProfileError: a pair is not ``KEY=VALUE``, the key is no parameter name, or the value is
            unreadable or breaks its rule.
    """
    out = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        k = k.strip()
        if not sep or not k:
            raise ProfileError(f"{flag} {_shown(kv)}: expected KEY=VALUE, e.g. {flag} epochs=3")
        if why := _check_name(k):
            raise ProfileError(f"{flag} {_shown(kv)}: {_shown(k)} {why}")
        try:
            value = parse_value(v)
        except ProfileError as e:
            raise ProfileError(f"{flag} {_shown(kv)}: {e}") from None
        if why := check_value(k, value):
            raise ProfileError(f"{flag} {k}={_shown(value)}: {why}")
        out[k] = value
    return out


def check_parameter(name: str, value, default) -> str:
    """Why ``value`` cannot replace ``default`` for parameter ``name`` ("" when it can): the
    type and sign of the notebook's default (0 allowed for :data:`ZERO_SKIPS`), then :func:`check_value`.

    Args:
        name: the parameter.
        value: the value the user gave.
        default: the notebook's default (None: no type to match).

    Returns:
        The reason, worded to follow ``name=value``; "" when the value is fine.
    """
    why = _by_default(name, value, default)
    return why or check_value(name, value)


def _by_default(name: str, value, default) -> str:
    if default is None:
        return ""
    if isinstance(default, list):
        return "" if isinstance(value, list) else "expects a list"
    if isinstance(default, dict):
        return "" if isinstance(value, dict) else "expects a mapping"
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
        if isinstance(value, float) and not math.isfinite(value):
            return "expects a finite number (not NaN or infinity)"
        if name.endswith("_fraction") and not 0 < value <= 1:
            return "expects a share above 0 and at most 1"
        if "seed" in name and value < 0:
            return "expects 0 or more"
        if default > 0 and "seed" not in name and value <= 0 and not (value == 0 and name in ZERO_SKIPS):
            return "expects a number above 0"
    return ""


def check_overrides(runs: list[Run], extra: dict) -> None:
    """Refuse, before anything runs, a parameter no selected notebook takes or a value it cannot
    (``-p``/``--grid`` values; a profile's own values were checked by :func:`load_profile`).

    Args:
        runs: the selected runs.
        extra: parameter name -> value to apply to every run that takes it.

    Raises:
        ProfileError: no selected notebook takes a parameter, or a value does not suit one that does.
    """
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
                raise ProfileError(f"-p {name}={_shown(value)}: {run_name} {why} "
                                   f"(its default is {_shown(default)})")
