"""Spirogram handling: UK Biobank field 3066 parsing, curve derivation, measures, QC, GLI-2012
reference values, WFDB I/O and (later) the 1D convolutional encoder.

This is the lowest layer of spirolm: it imports nothing from ``biobank``, ``llm_bridge`` or
``experiments``.
"""
