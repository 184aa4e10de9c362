"""shoal's own tools, not its API: the demo (`shoal demo`) and its scenes, the side-by-side
benchmark harness (`shoal bench`, bench/) and the /proc memory readers the demo, the benchmarks,
the examples and the tests share. Nothing here is re-exported by `shoal`."""
