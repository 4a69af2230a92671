"""Prefect flows of diaggmm-dist: ``train``, ``score`` and the scheduled ``retrain``.

They only orchestrate (tasks, retries, schedules, artifacts); the maths and the stores live in
:mod:`diaggmm_dist`. See flows/README.md.
"""
