"""Data layer: layout discovery, validated manifest, duplicates and splits, tf.data pipeline."""
from fracturelib.data.layout import Layout, LayoutError, discover
from fracturelib.data.manifest import build_manifest, manifest_hash, summary, usable, write_manifest

__all__ = ["Layout", "LayoutError", "discover", "build_manifest", "manifest_hash", "summary", "write_manifest",
           "usable"]
