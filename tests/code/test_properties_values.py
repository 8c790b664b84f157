"""One schema for user values: `-p`, profiles and `--grid` through one validator (types, ranges,
finite numbers, choices, bounded size, no YAML aliases); run and grid names never form paths."""
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fracturelib.app.cli import main
from fracturelib.workflow.profiles import ProfileError, check_value, load_profile, parse_overrides
from fracturelib.workflow.sweep import folder_name, grid

BOMB = ('x=[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a],'
        '&c [*b,*b,*b,*b,*b,*b,*b,*b,*b],&d [*c,*c,*c,*c,*c,*c,*c,*c,*c],&e [*d,*d,*d,*d,*d,*d,*d,*d,*d],'
        '&f [*e,*e,*e,*e,*e,*e,*e,*e,*e],&g [*f,*f,*f,*f,*f,*f,*f,*f,*f],&h [*g,*g,*g,*g,*g,*g,*g,*g,*g],'
        '&i [*h,*h,*h,*h,*h,*h,*h,*h,*h]]')


@pytest.mark.parametrize("text,why", [
    ("target_sensitivity=1.5", "above 0 and at most 1"),
    ("learning_rate=.nan", "finite"), ("learning_rate=.inf", "finite"), ("n_boot=[1, .nan]", "finite"),
    ("prevalence=banana", "expects a number, or null"),
    ("methods={a: 1}", "expects a list of: gradcam"), ("methods=[gradcam, nosuch]", "expects a list of"),
    ("methods=[]", "at least 1"), ("faith_methods=[]", "at least 1"), ("transfer_skip=[SCORECAM]", "has SCORECAM"),
    ("transfer_skip=scorecam", "written [a, b]"),
    ("image_size=100000", "from 32 to 1024"), ("epochs=100000", "at most 1000"),
    ("strategy=fast", "expects one of: auto"), ("channels=2", "expects one of: 1, 3"),
    ("seed=-1", "from 0"), ("x=2001-02-30", "cannot be read"), ("x=!!binary aGk=", "not bytes"),
    ("../x=1", "is not a parameter name"), ("x=" + "[" * 40 + "]" * 40, "nested more than"),
    ("x=" + "a" * 5000, "longer than"), (BOMB, "aliases"),
])
def test_bad_values_are_one_line(text, why):
    parse_overrides(["methods=[gradcam]", "strategy=auto"])   # the registries' imports are not what is timed
    t0 = time.monotonic()
    with pytest.raises(ProfileError, match=why.replace("[", r"\[").replace("(", r"\(")) as e:
        parse_overrides([text])
    # bounded time: the alias bomb alone once ran 85 s to a MemoryError; 5 s leaves room for a busy machine
    assert "\n" not in str(e.value) and time.monotonic() - t0 < 5


def test_good_values_pass():
    assert parse_overrides(["prevalence=null", "prevalence=0.1", "methods=[gradcam, scorecam]",
                            "data_dir=", "epochs=3", "seed=0", "learning_rate=1e-3",
                            "val_fraction=0.2"]) == {
        "prevalence": 0.1, "methods": ["gradcam", "scorecam"], "data_dir": "", "epochs": 3,
        "seed": 0, "learning_rate": 0.001, "val_fraction": 0.2}
    assert check_value("target_sensitivity", 1) == "" and check_value("anything", {"a": [1, "b"]}) == ""


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_p_string_is_a_value_or_one_profile_error(text):
    t0 = time.monotonic()
    try:
        out = parse_overrides([text])
    except ProfileError as e:
        assert "\n" not in str(e) and str(e).startswith("-p ")
    else:
        assert len(out) == 1
    assert time.monotonic() - t0 < 1


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["epochs", "learning_rate", "prevalence", "methods", "seed", "x"]),
       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                    max_leaves=20))
def test_any_yaml_value_is_a_value_or_one_profile_error(name, value):
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    try:
        parse_overrides([f"{name}={text}"])
    except ProfileError as e:
        assert "\n" not in str(e)


def _profile(tmp_path, runs, raw: bytes | None = None):
    p = tmp_path / "p.yaml"
    p.write_bytes(raw if raw is not None else yaml.safe_dump({"runs": runs}).encode())
    return str(p)


@pytest.mark.parametrize("runs,why", [
    ([{"name": "../../x", "notebook": "01_eda"}], "run name '../../x' must be"),
    ([{"name": "a", "notebook": "01_eda"}, {"name": "a", "notebook": "01_eda"}], "is used twice"),
    ([{"name": "a", "notebook": "01_eda", "parameters": {"learning_rate": float("nan")}}], "finite"),
    ([{"name": "a", "notebook": "01_eda", "parameters": {"target_sensitivity": 1.5}}], "at most 1"),
])
def test_profiles_go_through_the_same_validator(tmp_path, runs, why):
    with pytest.raises(ProfileError, match=why.replace("(", r"\(").replace(".", r"\.")):
        load_profile(_profile(tmp_path, runs))


def test_profile_not_utf8_aliases_and_size(tmp_path, capsys):
    p = _profile(tmp_path, None, b"runs:\n  - notebook: \xff\xfe01_eda\n")
    assert main(["run", "--profile", p, "--out", str(tmp_path / "r")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nruns: [{notebook: 01_eda, parameters: {v: *b}}]\n"
    with pytest.raises(ProfileError, match="aliases"):
        load_profile(_profile(tmp_path, None, bomb.encode()))
    with pytest.raises(ProfileError, match="larger than"):
        load_profile(_profile(tmp_path, None, b"#" * (2 << 20)))
    for name in ("quick", "full", "ci"):
        assert load_profile(name)


def test_workers_zero_and_grid_values_that_would_form_paths(tmp_path, capsys):
    assert main(["run", "--profile", "ci", "--only", "02", "--out", str(tmp_path / "r"),
                 "--grid", "seed=1,2", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --workers 0: must be 1 or more") and "Traceback" not in err
    a, b = folder_name({"data_dir": "a/b"}), folder_name({"data_dir": "a-b"})
    assert a != b and "/" not in a and folder_name({"seed": 1}) == "seed-1"
    up = folder_name({"data_dir": "../../x"})
    assert "/" not in up and up not in (".", "..")
    with pytest.raises(ProfileError, match="combinations"):
        grid(["seed=" + ",".join(map(str, range(40))), "epochs=" + ",".join(map(str, range(1, 40)))])
    with pytest.raises(ProfileError, match="finite"):
        grid(["learning_rate=0.1,.nan"])


def test_zero_fine_tuning_epochs_skip_phase_2_but_zero_training_epochs_are_refused():
    """From ``-p``/``--grid``, 0 is a real choice for the fine-tuning phases (no phase 2), not for a
    model's only training nor where a notebook divides by it: the default's sign guards those."""
    from fracturelib.workflow.profiles import check_parameter
    assert check_parameter("transfer_phase2_epochs", 0, 5) == ""
    assert check_parameter("phase2_epochs", 0, 6) == ""
    assert "above 0" in check_parameter("localiser_epochs", 0, 60)
    assert "above 0" in check_parameter("detector_epochs", 0, 40)
    assert check_parameter("phase2_epochs", -1, 6) != ""
    assert "above 0" in check_parameter("samples_per_class", 0, 6)     # 01 would divide by it
    from fracturelib.workflow.profiles import check_value
    assert all(check_value(n, 0) for n in ("samples_per_class", "intensity_per_class", "duplicate_pairs",
                                           "localiser_epochs", "detector_epochs"))          # profiles alike
    assert check_value("phase2_epochs", 0) == check_value("transfer_phase2_epochs", 0) == ""
