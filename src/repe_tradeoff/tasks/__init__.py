"""Tasks: what a sweep measures, behind one protocol (items, ``describe()``, ``score_items(runner, ids)``):
alignment (forced choice, yes/no, generation), multiple choice, short answers, fluency and lm-eval tasks,
and the registry that turns a spec into a task. Imports ``engine``, ``models`` and ``data``."""
