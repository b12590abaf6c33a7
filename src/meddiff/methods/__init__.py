"""Every runnable system, one registered home each, grouped by family (:mod:`.reconstruction`,
:mod:`.detection`, :mod:`.segmentation`); :mod:`.registry` lists them without importing them.
Methods work in model space, take loaded networks as arguments and load no files."""
