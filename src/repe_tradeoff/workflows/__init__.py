"""Workflows: the stages wired into jobs. Settings (the typed run config), grids (given, automatic),
the sweep loop, ``predict``, the prompting baseline, the atlas, and whole studies (``demo``, ``run``).
May import every stage below it; nothing but ``cli`` and the public API imports it."""
