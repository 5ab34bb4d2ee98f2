"""Engine: the forward passes. ``steer()`` hooks, scoring many norms in one batched pass, batching and
the out-of-memory policy, greedy generation, next-token KL, and one pass for many layer sets. Imports
``models`` and ``vectors`` only: never ``tasks``, ``runs`` or ``workflows`` (a runner takes any plan
with the fields of :class:`~repe_tradeoff.engine.batching.Grid`)."""
