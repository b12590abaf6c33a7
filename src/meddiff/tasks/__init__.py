"""Tasks: file in -> registered method -> file out. Each task reads the user's file
(:mod:`.inputs`), loads its networks through the one store (:mod:`meddiff.zoo.store`), converts
image space [0, 1] to the model space the methods work in and back, and writes through
:mod:`.outputs`; :mod:`meddiff.api` exposes them and the benches share them."""
