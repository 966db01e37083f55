"""Using and judging trained models: the sampling methods, bounds and tasks of image models (`tasks`), sample
metrics on our LeNet (`classifier`, `metrics`), linear probes, figures, and the benchmarks."""
