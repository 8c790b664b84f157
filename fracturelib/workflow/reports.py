"""The reports workflow in one import, for notebooks and scripts written against it: the notebook
helpers (:mod:`.notebook`), profiles (:mod:`.profiles`), the papermill runner (:mod:`.runner`) and
the index (:mod:`.report_index`). The ``run`` subcommand lives in :mod:`.cli`."""
from fracturelib.workflow.notebook import apply_profile, record
from fracturelib.workflow.profiles import PROFILE_ENV, Run, load_profile
from fracturelib.workflow.report_index import write_index
from fracturelib.workflow.runner import Result, run_all, run_one

__all__ = ["apply_profile", "record", "PROFILE_ENV", "Run", "load_profile", "write_index", "Result",
           "run_all", "run_one"]
