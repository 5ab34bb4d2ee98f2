"""Benchmarks of the norm sweep.

* :mod:`benchmarks.inputs`: the model, vector, grid and cloze sequences every method scores;
* :mod:`benchmarks.methods`: the methods being compared (the sweep, a per-norm loop, the
  steering-vectors library, plain forwards);
* :mod:`benchmarks.harness`: timing, memory, interleaved repetitions, output-equality checks;
* :mod:`benchmarks.flops`: matmul FLOP counts and the machine's matmul peak;
* :mod:`benchmarks.experiments`, :mod:`benchmarks.efficiency`: the measurements;
* :mod:`benchmarks.writer`, :mod:`benchmarks.prose`: results.json, RESULTS.md and the plot;
* ``python -m benchmarks.bench_sweep`` (CPU) and ``python -m benchmarks.bench_gpu`` (GPU).
"""
