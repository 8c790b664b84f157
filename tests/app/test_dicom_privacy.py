"""No patient data in any output: scan, a ci-profile notebook run and predict over DICOMs that carry
known fake identifiers, then every file they wrote (and what they printed) is searched for them."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fracturelib.app.cli import main
from fracturelib.data import build_manifest
from fracturelib.data.splits import assign_splits

ROOT = Path(__file__).resolve().parents[2]
UID_ROOT = "1.2.826.0.1.3680043.99999"
#: what must never appear in an output (the UIDs are matched by their root)
SECRETS = ["ZZFAKE", "PATIENTNAME", "ZZPID", "19010203", "ZZACC998877", "ZZ Fake Hospital", "ZZ Fake Street",
           "ZZREFERRER", UID_ROOT]


def write_radiographs(root: Path, per_class: int, per_patient: int = 3) -> None:
    """FracAtlas's embedded images as 12-bit DX DICOMs (window mapping them back), ``per_patient`` images a
    patient, every identifying attribute filled with a fake value."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset
    src = ROOT / "dataset" / "fracatlas" / "images"
    for k, (cls, out) in enumerate((("Fractured", "fractured"), ("Non_fractured", "non_fractured"))):
        (root / out).mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(sorted((src / cls).glob("*.jpg"))[:per_class]):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}.3.{k}.{i}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{UID_ROOT}.1.{k}.{i // per_patient}", f"{UID_ROOT}.2.{k}.{i}"
            ds.PatientName, ds.PatientID = "ZZFAKE^PATIENTNAME", f"ZZPID{k}{i // per_patient:04d}"
            ds.PatientBirthDate, ds.AccessionNumber = "19010203", "ZZACC998877"
            ds.InstitutionName, ds.InstitutionAddress = "ZZ Fake Hospital", "ZZ Fake Street"
            ds.ReferringPhysicianName = "ZZREFERRER^DOC"
            ds.Modality, ds.BodyPartExamined, ds.ImagerPixelSpacing = "DX", "HAND", [0.143, 0.143]
            ds.RescaleSlope, ds.RescaleIntercept = 1, 0
            ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 2048, 4096, "LINEAR_EXACT"
            gray = np.asarray(Image.open(p).convert("L"))
            ds.set_pixel_data(gray.astype(np.uint16) * 16, "MONOCHROME2", 12)
            ds.save_as(root / out / f"{p.stem}.dcm", enforce_file_format=True)


def leaks(folder: Path, printed: str) -> list[str]:
    """Every (file, secret) found: plain files byte-wise, zip members (.keras) decompressed, and the text
    the commands printed."""
    found = [f"<printed>: {s}" for s in SECRETS if s in printed]
    for f in folder.rglob("*"):
        if not f.is_file() or f.suffix == ".dcm":
            continue
        blobs = [f.read_bytes()]
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as z:
                blobs += [z.read(n) for n in z.namelist()]
        found += [f"{f.relative_to(folder)}: {s}" for s in SECRETS for b in blobs if s.encode() in b]
    return found


@pytest.mark.slow
def test_scan_notebook_run_and_predict_write_no_identifier(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    write_radiographs(data, per_class=24)
    out.mkdir()
    assert main(["scan", str(data), "--out", str(out / "manifest.csv"), "--quiet"]) == 0
    assert main(["run", "--profile", "ci", "--only", "02", "--out", str(out / "reports"), "-p", f"data_dir={data}",
                 "-p", "transfer_backbone=", "-p", f"model_path={out / 'models' / 'binary_cnn.keras'}",
                 "-p", "epochs=1", "-p", "n_boot=50", "-p", "subset_fraction=1.0"]) == 0
    image = sorted((data / "fractured").glob("*.dcm"))[0]
    assert main(["predict", str(image), "--model", str(out / "models" / "binary_cnn.keras"), "--json",
                 "--overlay-dir", str(out / "overlays")]) == 0
    printed = capsys.readouterr()
    answer = json.loads(printed.out[printed.out.index("{\n"):])
    assert answer["pixel_spacing_mm"] == [0.143, 0.143]
    assert answer["fracture_point_mm"] == pytest.approx([v * 0.143 for v in answer["fracture_point"]], abs=0.01)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert {"manifest.csv", "models/binary_cnn.json", "reports/02_binary_cnn.report.html"} <= set(written)
    assert leaks(out, printed.out + printed.err) == []
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert (manifest["status"] == "ok").all() and (manifest["modality"] == "DX").all()
    assert manifest["patient_group"].str.fullmatch(r"p[0-9a-f]{16}").all()


def test_one_patient_never_straddles_a_split(tmp_path):
    write_radiographs(tmp_path, per_class=18, per_patient=3)
    df = build_manifest(tmp_path, progress=False)
    assert df["patient_group"].nunique() == 12                  # 6 patients a class, 3 images each
    for seed in range(3):
        d = assign_splits(df, 0.2, 0.2, seed=seed)
        assert d.groupby("patient_group")["split"].nunique().max() == 1
        assert set(d["split"]) == {"train", "val", "test"} and not d["leak"].any()


def test_a_patient_on_both_sides_of_a_given_split_is_a_leak(tmp_path):
    write_radiographs(tmp_path / "src", per_class=6, per_patient=3)
    root = tmp_path / "data"
    for cls in ("fractured", "non_fractured"):
        files = sorted((tmp_path / "src" / cls).glob("*.dcm"))
        for split, chosen in (("train", files[:4]), ("test", files[4:])):   # patient 2 of each class in both
            (root / split / cls).mkdir(parents=True)
            for f in chosen:
                (root / split / cls / f.name).write_bytes(f.read_bytes())
    d = assign_splits(build_manifest(root, progress=False), 0.25, 0.2, seed=0)
    assert d.loc[d["split"] == "test", "leak"].all()              # the second patient of each class
    fractured = d[(d["label"] == "fractured") & (d["dup_group"] < 0)]  # no copy links these to another patient
    assert fractured["leak"].sum() == 2 and set(fractured.loc[fractured["leak"], "split"]) == {"test"}


def test_eda_tables_count_dicom_fields_and_images_per_patient(tmp_path):
    from fracturelib.data import eda
    write_radiographs(tmp_path, per_class=6, per_patient=2)
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "fractured" / "plain.png")
    tables = eda.metadata_tables(build_manifest(tmp_path, progress=False))
    assert tables["DICOM modality"].loc["DX"].tolist() == [6, 6]
    assert tables["DICOM modality"].loc["not DICOM", "fractured"] == 1
    assert tables["DICOM view position"].index.tolist() == ["(not stated)", "not DICOM"]
    assert tables["images per patient"].to_dict() == {"patients": {2: 6}}
