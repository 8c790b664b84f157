"""`fracturelib` command line: scan a dataset, fetch FracAtlas, run the report notebooks.

Exit codes: 0 done; 1 the work ran but something failed (a notebook, an image, a download);
2 a usage mistake (arguments, paths, profile, parameters, dataset layout, model card), reported as
one ``error:`` line; 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fracturelib import config


def _shown(s: str) -> str:
    """A path as the terminal can print it (:func:`fracturelib.files.shown`)."""
    from fracturelib.files import shown
    return shown(s)


def _print_table(title: str, t) -> None:
    print(f"\n{title}")
    print("\n".join(_shown(line) for line in t.to_string().splitlines()))


MODALITIES_HELP = ("DICOM files: the Modality codes to read besides the radiographs read by default "
                   f"({', '.join(config.RADIOGRAPH_MODALITIES)}), comma-separated (e.g. CT,MR), or 'all'")


def _modalities(text: str):
    """``--modalities``: codes added to the radiograph modalities, or ``all`` (None: every modality)."""
    codes = [c.strip().upper() for c in text.split(",") if c.strip()]
    if not codes or not all(c.replace("_", "").isalnum() and len(c) <= 16 for c in codes):
        raise argparse.ArgumentTypeError(f"{text!r}: give Modality codes separated by commas (e.g. CT,MR) or 'all'")
    return "all" if "ALL" in codes else tuple(codes)


def _chosen(extra):
    """The modalities read: the radiographs, plus ``extra`` (``all``: None, every modality)."""
    if extra == "all":
        return None
    return tuple(dict.fromkeys(config.RADIOGRAPH_MODALITIES + tuple(extra or ())))


def cmd_scan(a) -> int:
    """``fracturelib scan``: detect the dataset's layout, account for every file, report duplicates
    and leaks across splits, and optionally write the manifest.

    Args:
        a: the parsed arguments (``path``, ``out``, ``quiet``).

    Returns:
        0.

    Raises:
        IsADirectoryError: ``--out`` is a folder.
        LayoutError: the dataset layout cannot be recognised.
        OutputError: the manifest cannot be written.
    """
    from fracturelib.data import build_manifest, summary, usable, write_manifest
    from fracturelib.data.duplicates import cross_label_groups, cross_split_copies, leaked_test_images
    if a.out:
        from fracturelib.files import check_output
        if Path(a.out).is_dir():
            raise IsADirectoryError(f"--out {a.out}: is a folder; give a file name, e.g. {a.out}/manifest.csv")
        check_output(a.out, inside=a.path)               # before the scan: a mistake costs nothing
    df = build_manifest(a.path, progress=not a.quiet, modalities=_chosen(a.modalities))
    s = summary(df)
    print(f"dataset: {_shown(df.attrs['root'])}")
    print(f"layout: {s['layout']}  classes: {len(s['classes'])} ({_shown(', '.join(s['classes']))})")
    print(f"files: {s['files']} accounted for = {s['used']} used + {s['skipped']} skipped")
    other = df.attrs.get("other_files", [])
    if other:
        print(f"outside the image folders (metadata, not counted): {len(other)} files")
    for problem in df.attrs.get("metadata_problems", []):
        print(f"metadata {_shown(problem)}")
    counts = df.assign(split=df["split"].replace("", "-")).groupby(["label", "split"]).size()
    _print_table("files per class and split:", counts.unstack(fill_value=0))
    skipped = df[df["status"] != "ok"]
    if len(skipped):
        print(f"\nskipped: {len(skipped)}")
        for reason, n in s["skipped_by_reason"].items():
            print(f"  {n:5d}  {_shown(reason)}")
        for rel, reason in zip(skipped["relpath"], skipped["reason"]):
            print(f"  - {_shown(rel)}: {reason}")
    notes = usable(df)[lambda d: d["note"] != ""]
    if len(notes):
        print(f"\nused with a note: {len(notes)}")
        for rel, note in zip(notes["relpath"], notes["note"]):
            print(f"  - {_shown(rel)}: {note}")
    g = df[df["dup_group"] >= 0]
    print(f"\nduplicate groups: {s['duplicate_groups']} ({s['exact_groups']} with byte-identical "
          f"files, {df.attrs['near_pairs']} near-copy pairs), {len(g)} files in groups")
    xs = cross_split_copies(df)
    if len(xs):
        leaked = leaked_test_images(df)
        print(f"cross-split copies: {xs['dup_group'].nunique()} groups; "
              f"{len(leaked)} of {int(((df['split'] == 'test') & (df['status'] == 'ok')).sum())} "
              "test images have a copy in train")
    xl = cross_label_groups(df)
    if len(xl):
        print(f"groups with conflicting labels: {xl['dup_group'].nunique()}")
        for gid, grp in xl.groupby("dup_group"):
            members = zip(grp["relpath"], grp["label"])
            print(f"  group {gid}: " + "; ".join(f"{_shown(r)} [{_shown(lab)}]" for r, lab in members))
    if a.out:
        from fracturelib.files import ensure_dir, resolve_target
        ensure_dir(resolve_target(a.out).parent, "--out")
        write_manifest(df, a.out)            # atomic; a full or read-only disk is one error line
        print(f"\nmanifest written: {_shown(a.out)}")
    return 0


def cmd_fetch(a) -> int:
    """``fracturelib fetch``: download (or take ``--archive``), check and unpack FracAtlas.

    Args:
        a: the parsed arguments (``dest``, ``url``, ``expected_images``, ``retries``, ``archive``,
            ``quiet``).

    Returns:
        0 when the dataset is ready; 1 when the download or the archive failed (one ``error:`` line).

    Raises:
        NotADirectoryError, FileNotFoundError, OutputError: a usage mistake in ``--dest`` or ``--archive``.
    """
    from fracturelib.data.fetch import FetchError, fetch_fracatlas
    try:
        root = fetch_fracatlas(a.dest, url=a.url, expected_images=a.expected_images or None,
                               progress=not a.quiet, retries=a.retries, archive=a.archive)
    except FetchError as e:
        print(f"error: {_shown(e)}", file=sys.stderr)
        return 1                             # the download or the archive failed, not the user
    print(f"FracAtlas ready: {root}\n  next: fracturelib scan {root}")
    return 0


def cmd_predict(a) -> int:
    """``fracturelib predict``: classify images with a saved model, writing a heatmap overlay for each.

    Args:
        a: the parsed arguments (``images``, ``model``, ``localiser``, ``detector``, ``cam``, ``overlay_dir``,
            ``json``).

    Returns:
        0 when every image was classified; 1 when any failed (each failure is an ``error:`` line).

    Raises:
        ModelCardError: the model or its card cannot be used.
    """
    import json

    from fracturelib.app.predict import Predictor, format_result, predict_many
    from fracturelib.files import OutputError
    if a.overlay_dir is not None and not a.overlay_dir.strip():
        raise OutputError("--overlay-dir is empty; name a folder (or leave it out: ./overlays)", exit_code=2)
    predictor = Predictor(a.model, localiser_path=a.localiser, cam=a.cam, num_threads=a.threads,
                          modalities=_chosen(a.modalities), detector_path=a.detector)
    results = predict_many(predictor, a.images, a.overlay_dir)
    if a.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        print("\n\n".join(format_result(r) for r in results))
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"error: {_shown(r['error'])}", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(a) -> int:
    """``fracturelib export``: a saved Keras model (with its localiser, detector and OOD feature extractor) as
    LiteRT ``.tflite`` files beside it, behind the parity gate.

    Args:
        a: the parsed arguments (``model``, ``format``, ``quantize``, ``calibration``, ``force``, ``data``,
            ``out``, ``threads``).

    Returns:
        0 when written; 1 when the parity gate refused the export (one ``error:`` line with the figures).

    Raises:
        ModelCardError: the model or its card cannot be used, or the gate cannot be checked without
            ``--force`` or ``--data`` (``ExportError``).
    """
    from fracturelib.models.export import ParityError, export_litert
    try:
        res = export_litert(a.model, quantize=a.quantize, calibration=a.calibration, force=a.force,
                            data_dir=a.data, out=a.out, num_threads=a.threads,
                            log=lambda m: print(_shown(m), file=sys.stderr))
    except ParityError as e:
        print(f"error: {_shown(e)}", file=sys.stderr)
        return 1
    size = res.path.stat().st_size / 1e6
    print(f"written: {_shown(str(res.path))} ({size:.1f} MB, {a.quantize}) and its card "
          f"{_shown(res.path.name)}.json" + "".join(f"; {k}: {_shown(str(v))}" for k, v in res.companions.items()))
    if res.passed is None:
        print("parity: NOT checked (--force); the card says so")
    elif not res.passed:
        print("parity gate FAILED, written because of --force; the card says so")
    return 0


def cmd_serve(a) -> int:
    """``fracturelib serve``: the web page and the JSON API over the models of ``--models``.

    Args:
        a: the parsed arguments (``models``, ``host``, ``port``, ``max_upload_mb``, ``concurrency``).

    Returns:
        0 when stopped.

    Raises:
        FileNotFoundError: ``--models`` holds no usable model.
    """
    from fracturelib.app.serve import run
    return run(a.models, host=a.host, port=a.port, max_upload_mb=a.max_upload_mb, concurrency=a.concurrency)


def cmd_run(a) -> int:
    """``fracturelib run``: execute the profile's notebooks and write reports, or a sweep with ``--grid``.

    Args:
        a: the parsed arguments (``profile``, ``only``, ``out``, ``param``, ``force``, ``grid``, ``workers``,
            ``scheduler``).

    Returns:
        0 when every run is ``ok`` or ``cached``; 1 otherwise.

    Raises:
        ProfileError: an invalid profile, selection, parameter, ``--grid`` or ``--workers``.
        OutputError, NotADirectoryError, PermissionError: ``--out`` cannot be written.
        KeyboardInterrupt: a notebook was interrupted (Ctrl-C, or SIGTERM: ``runner.Terminated``).
    """
    from fracturelib.workflow.profiles import parse_overrides
    from fracturelib.workflow.runner import prepare_output, run_runs, select, sigterm_as_interrupt
    from fracturelib.workflow.sweep import check_workers
    only = None if a.only is None else [s.strip() for s in a.only.split(",")]
    extra = parse_overrides(a.param)
    check_workers(a.workers)                           # before any folder is made
    runs = select(a.profile, only)                     # an empty or unmatched --only: one error line
    with sigterm_as_interrupt():                       # SIGTERM ends the run like Ctrl-C
        if a.grid:
            from fracturelib.workflow.sweep import check_sweep, run_sweep, sweep_folder
            check_sweep(runs, a.grid, extra, a.workers)   # a bad --grid fails before any folder exists
            out = prepare_output(a.out) / sweep_folder(a.grid)
            index, rows = run_sweep(runs, out, a.grid, extra, a.workers, a.scheduler, str(a.profile))
            print(f"sweep index: {index}")
            return 0 if all(r["status"] in ("ok", "cached") for row in rows for r in row["runs"]) else 1
        results = run_runs(runs, a.out, str(a.profile), extra, force=a.force)
    return 0 if all(r.status in ("ok", "cached") for r in results) else 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one ``error:`` line (no usage block), exit code 2."""

    def error(self, message: str):
        """Print ``error: <message> (see <prog> --help)`` on stderr and exit 2."""
        self.exit(2, f"error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``scan``, ``fetch``, ``predict`` and ``run``, each bound to its ``cmd_*``.

    Returns:
        The parser; ``parse_args`` sets ``func`` to the chosen command's function.
    """
    p = _Parser(prog="fracturelib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p.set_defaults(_commands=sub.choices)       # main names the subcommand in an "unrecognized" error
    s = sub.add_parser("scan", help="detect a dataset's layout and account for every file")
    s.add_argument("path")
    s.add_argument("--out", help="write the manifest (CSV) here")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--modalities", type=_modalities, default=None, metavar="CODES",
                   help=MODALITIES_HELP)
    s.set_defaults(func=cmd_scan)
    from fracturelib.data.fetch import FRACATLAS_IMAGES, FRACATLAS_URL
    f = sub.add_parser("fetch", help="download a full public dataset")
    f.add_argument("dataset", choices=["fracatlas"])
    f.add_argument("--dest", required=True)
    f.add_argument("--url", default=FRACATLAS_URL)
    f.add_argument("--expected-images", type=int, default=FRACATLAS_IMAGES,
                   help="image count to check after unpacking (0: do not check)")
    f.add_argument("--retries", type=int, default=4)
    f.add_argument("--archive", default=None, help="use this already-downloaded FracAtlas zip "
                   "instead of downloading (it is copied, checked and unpacked)")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_fetch)
    pr = sub.add_parser("predict", help="classify images with a saved model: is it a radiograph, the answer, where "
                        "(overlay), and the fracture detector's boxes")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--model", default=None, help="a .keras model with its .json card, or a .tflite "
                    "(fracturelib export) run by LiteRT without TensorFlow (default: the binary model whose "
                    "card notebook 02 marked preferred, in models/)")
    pr.add_argument("--localiser", default=None, help="the box-trained localiser for 'where' (default: "
                    "the one the model's card names, written by notebook 04; else the CAM's peak)")
    pr.add_argument("--detector", default=None, help="the fracture detector whose boxes (x0, y0, x1, y1, score in "
                    "the file's pixels, those at least its card's box_threshold) are listed and drawn, the best "
                    "box's centre answering 'where' (default: the one the model's card names, written by "
                    "notebook 04; else no boxes)")
    pr.add_argument("--overlay-dir", "--gradcam-dir", dest="overlay_dir", default=None,
                    help="where overlays go (default: ./overlays); an input is never overwritten")
    from fracturelib.explain import cams
    pr.add_argument("--cam", default="gradcam", choices=cams.names(), metavar="NAME",
                    help=f"heatmap method: {', '.join(cams.names())} (default: gradcam); CAMs are a "
                    "Keras-model feature: with a .tflite model the heat is the localiser's")
    pr.add_argument("--threads", type=int, default=None, metavar="N",
                    help="LiteRT interpreter threads for a .tflite model (default: $FRACTURELIB_LITERT_THREADS or 2)")
    pr.add_argument("--json", action="store_true", help="print JSON")
    pr.add_argument("--modalities", type=_modalities, default=None, metavar="CODES", help=MODALITIES_HELP)
    pr.set_defaults(func=cmd_predict)
    ex = sub.add_parser("export", help="a saved model (and its localiser, detector and OOD features) as LiteRT "
                        ".tflite, checked against the Keras model on its validation images")
    ex.add_argument("model", help="the .keras model (its card beside it)")
    ex.add_argument("--format", default="litert", choices=["litert"])
    ex.add_argument("--quantize", default="none", choices=["none", "float16", "int8"],
                    help="none (float32), float16 weights, or int8 (calibrated on training images of every class)")
    ex.add_argument("--calibration", type=int, default=200, metavar="N", help="int8 calibration images (default 200)")
    ex.add_argument("--data", default=None, metavar="DIR", help="the data folder the model was trained on (default: "
                    "the card's, under dataset/ or the shared data folder)")
    ex.add_argument("--force", action="store_true", help="write even when the parity gate fails or cannot be "
                    "checked (the card says so)")
    ex.add_argument("--out", default=None, help="the .tflite to write (default: <model>.tflite beside the model)")
    ex.add_argument("--threads", type=int, default=None, metavar="N", help="LiteRT threads for the parity check")
    ex.set_defaults(func=cmd_export)
    from fracturelib import config
    r = sub.add_parser("run", help="execute the notebooks with papermill and write HTML reports")
    r.add_argument("--profile", default="quick", help="quick (embedded data), full, ci, or a YAML path")
    r.add_argument("--only", default=None, help="comma-separated notebook prefixes, e.g. 01,02 "
                   "(default: every notebook of the profile)")
    r.add_argument("--out", default=str(config.REPORTS_DIR))
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter in every notebook (YAML value)")
    r.add_argument("--force", action="store_true", help="rerun notebooks whose inputs are unchanged "
                   "(by default their reports are reused: rows marked cached)")
    r.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep: run every combination of these values, each in its own folder, "
                   "and write a sweep index (repeat for more parameters)")
    from fracturelib.workflow.sweep import MAX_WORKERS
    r.add_argument("--workers", type=int, default=1,
                   help=f"sweep runs at once (local processes, 1 to {MAX_WORKERS})")
    r.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="run the sweep on this Dask distributed cluster instead of local processes")
    r.set_defaults(func=cmd_run)
    sv = sub.add_parser("serve", help="the web app (upload radiographs, read the answers) and its JSON API")
    sv.add_argument("--models", default=str(config.MODELS_DIR), help="the folder of models to serve (only "
                    "these are loaded; default: models/, written by `make reports`)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--max-upload-mb", type=float, default=None,
                    help="largest upload (default: $FRACTURELIB_MAX_UPLOAD_MB or 50)")
    sv.add_argument("--concurrency", type=int, default=2, help="predictions at once (others wait in a queue)")
    sv.set_defaults(func=cmd_serve)
    return p


def _user_errors() -> tuple:
    """Exceptions that mean a mistake in what the user asked for: one line, no traceback."""
    from fracturelib.data.imageio import ImageError
    from fracturelib.data.layout import LayoutError
    from fracturelib.models.cards import ModelCardError
    from fracturelib.workflow.profiles import ProfileError
    return (LayoutError, ImageError, ModelCardError, ProfileError, FileNotFoundError,
            FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user mistake or a failed output becomes one ``error:`` line, not a traceback.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 done, 1 the work ran but something failed, 2 a usage mistake, 130 interrupted
        (143 terminated by SIGTERM during ``run``).

    Raises:
        SystemExit: argparse rejected the arguments (one ``error:`` line, code 2) or printed ``--help``
            (code 0).
    """
    from fracturelib.files import OutputError
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")    # before any subcommand imports TensorFlow
    parser = build_parser()
    a, unknown = parser.parse_known_args(argv)
    if unknown:                           # named by the subcommand's parser: "see fracturelib scan --help"
        parser = getattr(a, "_commands", {}).get(getattr(a, "command", None), parser)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return a.func(a)
    except KeyboardInterrupt as e:        # Ctrl-C, or SIGTERM during `run` (exit 143)
        print(f"error: {_shown(str(e) or 'interrupted')}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except OutputError as e:              # an output not written (full disk, read-only ...): 1 or 2
        print(f"error: {_shown(e)}", file=sys.stderr)
        return e.exit_code
    except _user_errors() as e:
        print(f"error: {_shown(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
