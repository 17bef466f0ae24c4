"""Chaos Toolkit activities: one module per area, inject/revert pairs as plain functions.

Every public function takes JSON-able arguments and ends with ``configuration``/``secrets``; its
docstring is its user documentation (Chaos Toolkit discovery shows it). The revert of each
inject is safe to run twice and when the inject never ran.
"""
