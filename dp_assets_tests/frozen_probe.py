"""Imported only by test_frozen.py, so that its first import happens inside import_frozen."""

MARK = "probe"
