"""Studies: many ordinary runs, cached and resumable, summed up in a report.

- :mod:`.common`: what both studies share: the status of a cached step (and the error when its
  folder holds another config), records (``study.yaml``, atomic JSON, cache keys, the commit),
  saving figures and formatting report numbers.
- The loss study (``bayespref compare``): :mod:`.loss_study_config` (the config and its grid
  of cells), :mod:`.loss_study` (train, evaluate and aggregate the cells: the recipe),
  :mod:`.loss_report` (conclusions, plots, ``report.md``).
- The calibration study (``bayespref calibration-study``): :mod:`.calibration_study_config`
  (the config and each step's config), :mod:`.calibration_study` (preference models,
  candidates, calibrations, evaluation: the recipe), :mod:`.calibration_report` (the acceptance
  verdict, plots, ``report.md``).
- The pairwise study (``bayespref compare`` on a study file with ``kind: pairwise``):
  :mod:`.pairwise_study_config`, :mod:`.pairwise_study`, :mod:`.pairwise_report` (reward-model
  losses on synthetic pairs with a known ``P*``).
"""
