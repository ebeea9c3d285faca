"""Bulk, incremental, crash-safe indexing of photo folders.

Submodules: ``scan`` (walk), ``decode`` (hardened decoding), ``exif`` (metadata),
``captions`` (sidecars and manifests), ``pipeline`` (the commit protocol),
``lock`` (one writer per index). Import them directly; this package imports
nothing heavy.
"""
