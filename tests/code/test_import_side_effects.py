"""Importing fracturelib changes no global state of PIL, seaborn/matplotlib or os.environ."""
import subprocess
import sys

CODE = r"""
import os, importlib, pkgutil, json
import PIL.Image, PIL.ImageFile, matplotlib
import cv2, keras, seaborn, tensorflow   # third-party imports set their own variables: not ours to judge
before = (dict(os.environ), PIL.Image.MAX_IMAGE_PIXELS, PIL.ImageFile.LOAD_TRUNCATED_IMAGES, dict(matplotlib.rcParams))
import fracturelib
for m in pkgutil.walk_packages(fracturelib.__path__, "fracturelib."):
    importlib.import_module(m.name)
after = (dict(os.environ), PIL.Image.MAX_IMAGE_PIXELS, PIL.ImageFile.LOAD_TRUNCATED_IMAGES, dict(matplotlib.rcParams))
names = ("environ", "MAX_IMAGE_PIXELS", "LOAD_TRUNCATED_IMAGES", "rcParams")
changed = [name for name, a, b in zip(names, before, after) if a != b]
print(json.dumps(changed))
"""


def test_importing_every_module_leaves_global_state_alone():
    env = {"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
